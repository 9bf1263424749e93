"""`python -m bench.feedback_loop`: does reviewers' feedback make the next drafts better?

A simulated reviewer with one house rule (by default: write "per", never "iaw") reads N drafts
and corrects every breach through storage, exactly as the Draft screen records an edit (a token
edit of the run, with the reason "house style"); a second reviewer approves each draft. The
feedback is exported (`storage.export training`), the model is fine-tuned on it
(`engine.train --init-from --feedback`, a few hundred steps), and fresh drafts are scored.

Glossary
  prompt       the first --prompt-words words of a validation-split report, pinned at the start of
               a free draft of --length tokens. The reviewer's drafts use reports 0..N-1, the
               scored drafts the last --fresh reports: nobody's feedback saw those
  breach rate  share of the scored drafts whose generated words include the term the reviewer
               always corrects; "uses fix" is the share that write its replacement
  judge ppl    bench.judge's word-trigram perplexity of the generated words (fitted on the train
               split), as in bench.draft_quality
  test bound   engine.promotion's check: the validation bound (bits/token) of parent and
               fine-tune on fixed windows of the untouched test split, and its relative change
  minutes      wall time of the whole loop for one N (drafting N, reviewing, exporting,
               fine-tuning, scoring), and of the fine-tune alone

Everything is written under --out (ignored data/ by default); the fine-tuned models stay there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from bench.judge import Judge
from engine import checkpoint
from engine.sampler import sample
from engine.terms import find_term
from engine.words import words

USERS = {"op": "operator", "rev": "reviewer", "rev2": "reviewer", "mgr": "manager"}
PASSWORD = "feedback loop bench"


def draft(ck: checkpoint.Checkpoint, prompt: str, seed: int, length: int, steps: int) -> tuple[list[int], int]:
    """(token ids, prompt length in tokens) of one free draft after a pinned prompt."""
    pre = ck.tokenizer.encode(prompt)
    cfg = dataclasses.replace(ck.sampler_cfg, steps=steps, seed=seed)
    last = None
    for last in sample(ck.model, ck.diffusion(), cfg, length=length, pins=dict(enumerate(pre)), words=ck.words):
        pass
    assert last is not None
    return last.tokens.tolist(), len(pre)


def score(ck: checkpoint.Checkpoint, judge: Judge, prompts: Sequence[str], term: str, fix: str, length: int,
          steps: int) -> dict[str, float]:
    fills = []
    for i, prompt in enumerate(prompts):
        ids, n = draft(ck, prompt, 10_000 + i, length, steps)
        fills.append(ck.tokenizer.decode(ids[n:]))
    ws = [words(f) for f in fills]
    return {"breach": sum(term in w for w in ws) / len(ws), "uses_fix": sum(fix in w for w in ws) / len(ws),
            "judge_ppl": judge.score([[f] for f in fills]).ppl}


def review(factory, ck: checkpoint.Checkpoint, prompts: Sequence[str], term: str, fix: str, length: int,
           steps: int) -> tuple[int, int]:
    """Draft each prompt, record it as a run, correct every breach as a token edit, approve it.
    Returns (drafts, edits)."""
    from storage import repository as repo
    from storage.db import transaction

    tok, n_edits = ck.tokenizer, 0
    for i, prompt in enumerate(prompts):
        ids, n_pre = draft(ck, prompt, i, length, steps)
        with transaction(factory) as s:
            doc = repo.create_document(s, actor="op", title=f"report {i}")
            run = repo.create_run(s, document_id=doc.id, actor="op", model_id=ck.model_id, model_checksum=ck.checksum,
                                  seed=i, sampler_settings={"steps": steps})
            repo.record_step(s, run.id, 0, ids, [1.0] * len(ids))
            doc_id, run_id = doc.id, run.id
        # right to left, so that a length-changing correction leaves the earlier spans where they are
        spans = [(a, b) for a, b in find_term(tok.piece_bytes(ids), term) if a >= n_pre]
        for a, b in reversed(spans):
            old = tok.decode(ids[a:b])
            new = old.replace(term, fix)
            new_ids = tok.encode(new)
            with transaction(factory) as s:
                repo.record_run_edit(s, document_id=doc_id, actor="rev", run_id=run_id, step_index=0, span_start=a,
                                     span_end=b, old_text=old, new_text=new, new_n_tokens=len(new_ids),
                                     reason=f"house style: {fix}, not {term}")
            ids = ids[:a] + new_ids + ids[b:]
            n_edits += 1
        with transaction(factory) as s:
            d = repo.get_document(s, doc_id)
            repo.update_document(s, doc_id, actor="op", expected_version=d.version, text=tok.decode(ids),
                                 status="awaiting_review")
        with transaction(factory) as s:
            d = repo.get_document(s, doc_id)
            repo.record_review(s, document_id=doc_id, actor="rev2", decision="approve", expected_version=d.version,
                               signature_meaning="approved as reviewed")
    return len(prompts), n_edits


def loop(args: argparse.Namespace, n: int, ck: checkpoint.Checkpoint, judge: Judge, val: list[str],
         before: dict[str, float]) -> dict:
    from storage.db import make_engine, make_session_factory, transaction
    from storage.migrations import migrate
    from storage import repository as repo
    from storage.training_export import export_training

    from engine.train import main as train_main

    t0 = time.perf_counter()
    work = args.out / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    db = work / "feedback.sqlite3"
    db.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    factory = make_session_factory(engine)
    with transaction(factory) as s:
        for name, role in USERS.items():
            repo.create_user(s, name, role, PASSWORD)
    drafts, edits = review(factory, ck, val[:n], args.term, args.fix, args.length, args.sampler_steps)
    with transaction(factory) as s:
        export_training(s, work / "feedback", actor="mgr")
    engine.dispose()
    t_ft = time.perf_counter()
    rc = train_main(["--data", str(args.corpus), "--out", str(work / "run"), "--init-from", str(args.model),
                     "--feedback", str(work / "feedback"), "--max-steps", str(args.steps), "--seq-len", str(args.seq_len),
                     "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--warmup-steps", "10",
                     "--eval-every", str(args.steps), "--log-every", str(max(1, args.steps // 10)),
                     "--feedback-share", str(args.share), "--version", f"feedback-n{n}", "--seed", "0"])
    if rc != 0:
        raise SystemExit(f"fine-tune for N={n} failed ({rc})")
    ft_minutes = (time.perf_counter() - t_ft) / 60
    tuned = checkpoint.load(work / "run" / "model")
    after = score(tuned, judge, val[-args.fresh:], args.term, args.fix, args.length, args.sampler_steps)
    gate = tuned.meta["test_gate"]
    return {"n": n, "drafts": drafts, "edits": edits, "before": before, "after": after, "gate": gate,
            "model_id": tuned.model_id, "fine_tune_minutes": ft_minutes,
            "minutes": (time.perf_counter() - t0) / 60}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.feedback_loop", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("assets/model"))
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="prepared corpus (train / validation / test)")
    p.add_argument("--n", default="20,100,500", help="drafts the reviewer corrects, comma-separated")
    p.add_argument("--fresh", type=int, default=40, help="fresh drafts scored before and after")
    p.add_argument("--term", default="iaw", help="the word the reviewer always corrects")
    p.add_argument("--fix", default="per", help="what the reviewer writes instead")
    p.add_argument("--length", type=int, default=96, help="draft length in tokens")
    p.add_argument("--prompt-words", type=int, default=6)
    p.add_argument("--sampler-steps", type=int, default=32)
    p.add_argument("--steps", type=int, default=200, help="fine-tune optimizer steps")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--share", type=float, default=0.5, help="share of each batch drawn from the feedback")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("data/feedback_loop"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.corpus / "validation.jsonl").open(encoding="utf-8") as f:
        val = [" ".join(json.loads(line)["text"].split()[: args.prompt_words]) for line in f if line.strip()]
    ns = [int(x) for x in args.n.split(",") if x.strip()]
    if max(ns) + args.fresh > len(val):
        p.error(f"N + --fresh must be at most the {len(val)} validation reports")
    judge = Judge.from_split(args.corpus / "train.jsonl")
    ck = checkpoint.load(args.model)
    print(f"model {ck.model_id}; rule: {args.fix!r} for {args.term!r}; {args.fresh} fresh drafts of {args.length} tokens, "
          f"{args.sampler_steps} sampler steps; fine-tune {args.steps} steps x {args.batch_size} x {args.seq_len}, share "
          f"{args.share}; {args.threads} thread(s), {platform.machine()}", flush=True)
    before = score(ck, judge, val[-args.fresh:], args.term, args.fix, args.length, args.sampler_steps)
    rows = []
    for n in ns:
        rows.append(loop(args, n, ck, judge, val, before))
        (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n| N | edits | breach before -> after | uses fix before -> after | judge ppl before -> after "
          "| test bound parent -> tuned (change) | fine-tune min | total min |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, a, g = r["before"], r["after"], r["gate"]
        print(f"| {r['n']} | {r['edits']} | {100 * b['breach']:.0f} % -> {100 * a['breach']:.0f} % "
              f"| {100 * b['uses_fix']:.0f} % -> {100 * a['uses_fix']:.0f} % | {b['judge_ppl']:.0f} -> {a['judge_ppl']:.0f} "
              f"| {g['parent_bits_per_token']:.3f} -> {g['bits_per_token']:.3f} ({100 * g['change']:+.2f} %) "
              f"| {r['fine_tune_minutes']:.1f} | {r['minutes']:.1f} |")
    print(f"\nmedian seconds per fine-tune step: {statistics.median(r['fine_tune_minutes'] * 60 / args.steps for r in rows):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
