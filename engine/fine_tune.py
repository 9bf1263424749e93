"""What a fine-tune adds to a training run (`engine.train --init-from [--feedback]`): the feedback
batch mix and what the run records about it, the name it keeps, and the forgetting check
(engine.promotion) written into the fine-tuned model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from engine import checkpoint
from engine.config import TrainConfig
from engine.feedback import FeedbackMix, load_feedback
from engine.promotion import forgetting_check
from engine.tokenizer import Tokenizer
from engine.train_data import TrainError, load_split_texts


def feedback_run(args: argparse.Namespace, tok: Tokenizer, tcfg: TrainConfig) -> tuple[dict[str, Any], FeedbackMix | None]:
    """(meta to record, batch mix) of a fine-tune on --feedback. A resumed fine-tune must be given
    the same feedback folder (its manifest's SHA-256 is recorded), a plain run none."""
    saved = None
    if args.resume:
        saved = json.loads((args.out / "model" / "config.json").read_text())["meta"].get("feedback")
        if saved and not args.feedback:
            raise TrainError(f"--resume: this run fine-tunes on feedback ({saved['sha256'][:12]}); give --feedback DIR again")
    if not args.feedback:
        return {}, None
    fb = load_feedback(args.feedback)
    if args.resume and (not saved or saved["sha256"] != fb.sha256):
        raise TrainError(f"--resume: --feedback {args.feedback} is not the feedback this run started with")
    for why, n in fb.skipped.items():
        print(f"feedback: left out {n} ({why})", file=sys.stderr)
    mix = FeedbackMix(fb, tok, tcfg.seq_len, tcfg.feedback_share)
    print(f"feedback: {len(fb.approved)} approved documents, {len(mix.edits)} edit examples, share {tcfg.feedback_share}",
          file=sys.stderr)
    return {"feedback": fb.summary() | {"path": str(args.feedback.resolve())}}, mix


def kept_name(args: argparse.Namespace) -> str | None:
    """The name a fine-tune keeps: its parent's (--init-from), or the run's own when it resumes a
    fine-tune; None for a run from scratch."""
    if args.init_from:
        config = json.loads((args.init_from / "config.json").read_text())
    elif args.resume:
        config = json.loads((args.out / "model" / "config.json").read_text())
        if not config.get("meta", {}).get("init_from"):
            return None
    else:
        return None
    return str(config.get("name") or "") or None


def record_forgetting_check(args: argparse.Namespace, parent: str, seq_len: int,
                            evaluate_loss: Callable[..., dict[str, float]]) -> None:
    """Record the forgetting check (engine.promotion) in the fine-tuned model, when the corpus has
    a test split; else say that without it the model cannot be promoted."""
    if not (args.data / "test.jsonl").is_file():
        print(f"note: {args.data} has no test.jsonl: no forgetting check is recorded, and the app will not promote "
              "this model", file=sys.stderr)
        return
    gate = forgetting_check(parent, args.out / "model", load_split_texts(args.data, "test"), seq_len=seq_len,
                            evaluate_loss=evaluate_loss)
    checkpoint.amend(args.out / "model", meta={"test_gate": gate})
    print(f"test-split bound {gate['parent_bits_per_token']:.3f} -> {gate['bits_per_token']:.3f} bits/token "
          f"({100 * gate['change']:+.2f} %, tolerance {100 * gate['tolerance']:.0f} %): "
          f"{'may be promoted' if gate['passed'] else 'NOT promotable'}", file=sys.stderr)
