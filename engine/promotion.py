"""The forgetting check a fine-tuned model must pass before it may become the default.

A fine-tune on reviewers' feedback may make the model worse at the text it knew. After a
fine-tune, `engine.train` measures the validation bound (bits per token, engine.train.evaluate_loss)
of the parent and of the fine-tuned model on the same fixed windows of the corpus's untouched test
split, and records the result in the model's meta as "test_gate". `refusal` reads it: a model whose
bound is more than TOLERANCE (relative) worse than its parent's is refused promotion, and so is a
fine-tune without the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TOLERANCE = 0.02  # 2 %: the largest relative worsening of the test bound a promoted fine-tune may show


def forgetting_check(parent_dir: str | Path, model_dir: str | Path, test_texts: Sequence[str], *, seq_len: int,
              evaluate_loss: Callable[..., dict[str, float]], max_windows: int = 32, batch: int = 8,
              tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Bound of both models on the same test windows, measured by `evaluate_loss` (the training
    loop's, engine.train.evaluate_loss, passed in so that the two modules import one way only);
    "passed" when the fine-tune's is at most `tolerance` (relative) above its parent's."""
    from engine import checkpoint
    from engine.train_data import eval_windows, token_stream

    parent, model = checkpoint.load(parent_dir), checkpoint.load(model_dir)
    data = eval_windows(token_stream(test_texts, model.tokenizer), seq_len, max_windows)  # (N, L)
    bits = [evaluate_loss(ck.model, ck.model_cfg.arch, ck.diffusion(), data, batch)["nelbo_bits_per_token"]
            for ck in (parent, model)]
    change = (bits[1] - bits[0]) / bits[0]
    return {"split": "test", "windows": int(data.shape[0]), "seq_len": seq_len, "parent": parent.model_id,
            "parent_bits_per_token": round(bits[0], 5), "bits_per_token": round(bits[1], 5),
            "change": round(change, 5), "tolerance": tolerance, "passed": change <= tolerance}


def refusal(version: str, parent: str | None, meta: dict[str, Any]) -> str | None:
    """Why the model may not become the default (one sentence for the admin), or None when it may.
    A model without a parent (trained from scratch, e.g. the shipped one) is not gated."""
    if parent is None:
        return None
    gate = meta.get("test_gate")
    if not isinstance(gate, dict) or "change" not in gate:
        return (f"version {version} is a fine-tune of {parent} without a test-split check: fine-tune it with a "
                "prepared corpus that has test.jsonl (engine.train --data) so that forgetting is measured")
    change, tol = float(gate["change"]), float(gate.get("tolerance", TOLERANCE))
    if change > tol:
        return (f"version {version} worsens the test-split bound by {100 * change:.1f} % against its parent "
                f"({gate['parent_bits_per_token']:.3f} -> {gate['bits_per_token']:.3f} bits/token; the tolerance "
                f"is {100 * tol:.0f} %): not promoted")
    return None
