"""`python -m engine.sample`: draft text with a model folder, optionally from a template or pins.

Prints the final text; with --jsonl, one JSON object per reverse-diffusion step:
  {"step": k, "t": t_k, "tokens": [...], "text": "...", "pinned": [positions]}
Bad arguments (a pin past the end, overlapping pins, steps < 1, an unknown model folder, a bad
template) exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from engine.cli import Parser, one_line

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "assets" / "model"

MAX_LENGTH = 16384
MAX_STEPS = 4096


def _parse_pin(raw: str) -> tuple[int, str]:
    pos, sep, text = raw.partition("=")
    if not sep or not pos.strip().lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"--pin {raw!r}: expected POS=TEXT, e.g. 12=hydraulic pump")
    if not text:
        raise argparse.ArgumentTypeError(f"--pin {raw!r}: TEXT is empty")
    return int(pos), text


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m engine.sample",
        description="Draft text with a DiffDraft model: start from noise and refine it step by step, "
        "keeping pinned tokens fixed.",
    )
    p.add_argument("--model", type=Path, default=SHIPPED_MODEL,
                   help="model folder (weights.pt, config.json, tokenizer.json, manifest.json; default: the shipped model, assets/model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--length", type=int, help="number of tokens to draft when no template is given (default 64)")
    src.add_argument("--template", type=Path, help="template file: fixed text is pinned, {{slot:N}} places are generated")
    p.add_argument("--prefix", default="", help="text pinned at the start of a free-length draft")
    p.add_argument("--steps", type=int, default=None, help="reverse-diffusion steps (default: the model's sampler setting for the kind of draft, "
                   "free length or template)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed and pins give the same draft")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature > 0 (default: the model's)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1] (default: the model's)")
    p.add_argument("--sampler", default="", metavar="SPEC",
                   help="other sampler fields to change from the model's defaults, comma-separated, e.g. "
                   "'commit=0,whole_words=0' or 'temperature_end=0.3,no_repeat=2' (fields of engine.config.SamplerConfig)")
    p.add_argument(
        "--pin",
        action="append",
        default=[],
        type=_parse_pin,
        metavar="POS=TEXT",
        help="pin the tokens of TEXT at token positions POS, POS+1, ...; may be repeated",
    )
    p.add_argument("--jsonl", action="store_true", help="print one JSON object per step instead of the final text")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def _fail(message: str) -> NoReturn:
    print(f"python -m engine.sample: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps is not None and not 1 <= args.steps <= MAX_STEPS:
        _fail(f"--steps must be between 1 and {MAX_STEPS}, got {args.steps}")
    if args.length is not None and not 1 <= args.length <= MAX_LENGTH:
        _fail(f"--length must be between 1 and {MAX_LENGTH}, got {args.length}")
    if args.temperature is not None and not args.temperature > 0:
        _fail(f"--temperature must be > 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        _fail(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.template is not None and args.prefix:
        _fail("--prefix applies to free-length drafts; put fixed text in the template instead")

    import dataclasses

    import torch

    from engine import checkpoint, template
    from engine.config import for_kind, parse_sampler_spec
    from engine.sampler import sample, validate_pins

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ckpt = checkpoint.load(args.model)
    except checkpoint.CheckpointError as exc:
        _fail(str(exc))
    tok = ckpt.tokenizer

    pins: dict[int, int] = {}
    labels: list[int] = []  # the template's fixed text, for the sampler's avoid_labels
    owner: dict[int, str] = {}
    if args.template is not None:
        try:
            layout = template.expand(args.template.read_text(encoding="utf-8"), tok)
        except OSError as exc:
            _fail(f"cannot read template {args.template}: {exc.strerror}")
        except UnicodeDecodeError:
            _fail(f"template {args.template} is not UTF-8 text")
        except template.TemplateError as exc:
            _fail(f"template {args.template}: {exc}")
        length = layout.length
        pins.update(layout.pins)
        labels = list(layout.pins.values())
        owner.update({p: "the template's fixed text" for p in layout.pins})
    else:
        prefix_ids = tok.encode(args.prefix) if args.prefix else []
        length = args.length if args.length is not None else max(64, len(prefix_ids) + 1)
        if len(prefix_ids) > length:
            _fail(f"--prefix is {len(prefix_ids)} tokens, longer than --length {length}")
        pins.update(enumerate(prefix_ids))
        owner.update({p: "--prefix" for p in range(len(prefix_ids))})

    for pos, text in args.pin:
        ids = tok.encode(text)
        if pos < 0 or pos + len(ids) > length:
            _fail(f"--pin {pos}={text!r} needs positions {pos}..{pos + len(ids) - 1}, but the draft has positions 0..{length - 1}")
        for i, tid in enumerate(ids):
            if pos + i in owner:
                _fail(f"--pin {pos}={text!r} overlaps {owner[pos + i]} at position {pos + i}")
            pins[pos + i] = tid
            owner[pos + i] = f"--pin {pos}={text!r}"

    try:
        cfg = parse_sampler_spec(args.sampler, ckpt.sampler_cfg)
    except ValueError as exc:
        _fail(f"--sampler: {exc}")
    cfg = for_kind(cfg, free_length=args.template is None)
    changes = {"seed": args.seed}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.temperature is not None:
        changes["temperature"] = args.temperature
    if args.top_p is not None:
        changes["top_p"] = args.top_p
    cfg = dataclasses.replace(cfg, **changes)

    diffusion = ckpt.diffusion()
    try:
        validate_pins(pins, length)
        last = None
        for step in sample(ckpt.model, diffusion, cfg, length=length, pins=pins, words=ckpt.words, labels=labels):
            last = step
            if args.jsonl:
                ids = step.tokens.tolist()
                print(
                    json.dumps(
                        {
                            "step": step.index,
                            "t": round(float(step.t), 6),
                            "tokens": ids,
                            "text": tok.decode(ids),
                            "pinned": step.pinned.nonzero().flatten().tolist(),
                        }
                    ),
                    flush=True,
                )
    except ValueError as exc:  # a ConstraintError, or sampler settings that do not fit together
        _fail(str(exc))
    if not args.jsonl and last is not None:
        print(tok.decode(last.tokens.tolist()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
