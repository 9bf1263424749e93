"""`python -m engine.train`: one training loop for the SFDLM, the transformer denoiser and the
causal baseline; single process, or several through `torchrun` (DDP; gloo on CPU, nccl on GPU).

Glossary
  stream   all training tokens, documents joined by <eos> (1-D LongTensor)
  window   seq_len consecutive tokens of the stream: one training sequence
  step     one optimizer update over batch_size windows per process
  clean    positions of a window that are given clean (prefix / spans / headings), so the
           denoiser learns to infill around pins; excluded from the loss
  run dir  --out: train_state.pt (everything needed to resume exactly), model/ (a model folder
           for engine.sample / engine.evaluate), log.jsonl (one line per log / eval)

Resuming (--resume) restores the weights, the optimizer, the step, and every random generator
(data windows, noise, clean spans, torch's global RNG), so a run stopped and resumed makes the
same updates as one that never stopped. The learning rate is a pure function of the step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import checkpoint
from engine.build import build_model, count_parameters
from engine.checkpoint import diffusion_for
from engine.clean_mask import random_clean_mask
from engine.cli import Parser, one_line, out_path
from engine.feedback import FeedbackError, FeedbackMix
from engine.fine_tune import feedback_run, kept_name, record_forgetting_check
from engine.slot_data import SlotMix
from engine.config import RECOMMENDED_SAMPLER, DiffusionConfig, ModelConfig, TrainConfig, from_dict, to_dict
from engine.tokenizer import Tokenizer
from engine.train_data import (  # the data half of training, also imported from here by callers
    TrainError, eval_windows, load_split_texts, load_texts, token_stream, windows)  # noqa: F401
from engine.words import build_lexicon

STATE = "train_state.pt"


# ----- objectives ------------------------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10 % of cfg.lr at max_steps (or, with a time budget
    cfg.max_seconds, at that much training time, whichever comes first)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    if cfg.max_seconds > 0:
        frac = max(frac, min(1.0, elapsed / cfg.max_seconds))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def batch_loss(model: nn.Module, arch: str, diffusion: Any, x0: Tensor, gen: torch.Generator, clean_prob: float,
               clean: Tensor | None = None) -> tuple[Tensor, float, int]:
    """(differentiable loss, nelbo sum in nats, tokens counted) for one batch of windows; `clean`
    (B, L) bool gives the clean positions (default: random_clean_mask with clean_prob)."""
    if arch == "causal":
        logits = model(x0[:, :-1])  # (B, L-1, V)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x0[:, 1:].reshape(-1), reduction="sum")
        n = x0[:, 1:].numel()
        return nll / n, float(nll.detach()), n
    if clean is None:
        clean = random_clean_mask(x0.shape[0], x0.shape[1], gen, p=clean_prob)  # (B, L)
    out = diffusion.loss(model, x0, clean.to(x0.device), gen)
    return out.loss, float(out.nelbo_sum), out.n_tokens


def optimizer_step(net: nn.Module, arch: str, diffusion: Any, opt: torch.optim.Optimizer, x0: Tensor, gen: torch.Generator,
                   clean_prob: float, grad_clip: float = 0.0, clean: Tensor | None = None) -> Tensor:
    """One training step on the batch x0 (B, L): loss, backward, gradient clipping to `grad_clip`
    (global norm over the optimizer's parameters; 0 = none), update. `net` may be a DDP wrapper.
    Returns the step's loss (detached)."""
    loss, _, _ = batch_loss(net, arch, diffusion, x0, gen, clean_prob, clean)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_([q for group in opt.param_groups for q in group["params"]], grad_clip)
    opt.step()
    return loss.detach()


@torch.no_grad()
def evaluate_loss(model: nn.Module, arch: str, diffusion: Any, data: Tensor, batch: int, seed: int = 1234) -> dict[str, float]:
    """Bits per token and perplexity bound on fixed windows, no clean positions, fixed noise."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for i in range(0, data.shape[0], batch):
        _, s, n = batch_loss(model, arch, diffusion, data[i : i + batch], gen, clean_prob=0.0)
        total, count = total + s, count + n
    model.train(was)
    nats = total / max(count, 1)
    return {"nelbo_bits_per_token": nats / math.log(2), "ppl_bound": math.exp(min(nats, 50.0)), "tokens": count}


# ----- the run ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    model_cfg: ModelConfig
    diffusion_cfg: DiffusionConfig
    train_cfg: TrainConfig
    tokenizer: Tokenizer
    end_of_slot: bool = False  # the saved sampler settings turn on end_of_slot (the weights learnt <eos> in slots)


def _dist() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Tensor]:
    return {**{k: g.get_state() for k, g in gens.items()}, "torch": torch.get_rng_state()}


def train(setup: Setup, train_texts: Sequence[str], val_texts: Sequence[str], out: Path, *,
          resume: bool = False, init_state: dict[str, Tensor] | None = None, device: str = "cpu",
          log_every: int = 10, save_every: int = 0, name: str = "sfdlm", stop_after: int | None = None,
          keep_best: bool = False, mix: FeedbackMix | SlotMix | None = None, meta: dict[str, Any] | None = None,
          lineage: dict[str, str] | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns the last validation metrics. Rank 0 writes the run dir.

    `mix` draws part of every batch from reviewers' feedback (engine.feedback); `meta` is added to
    the saved model's meta and `lineage` (version, parent) to its manifest.
    `stop_after` ends the run early at that step, saved as if interrupted (for --resume).
    `keep_best` also writes out/best/ (a model folder) whenever the validation bound improves,
    so that a long multi-epoch run keeps its best model even if it later over-fits."""
    rank, world = _dist()
    cfg, mcfg = setup.train_cfg, setup.model_cfg
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    out.mkdir(parents=True, exist_ok=True)
    if device.startswith("cuda"):  # TF32 tensor cores for the real GEMMs; FFTs stay in float32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tok = setup.tokenizer
    stream = token_stream(train_texts, tok)
    lexicon = build_lexicon([*train_texts, *(mix.texts if mix is not None else [])])  # the sampler's word rule (engine.words)
    val = eval_windows(token_stream(val_texts, tok), cfg.seq_len, 64) if val_texts else None

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = build_model(mcfg).to(device)
    if init_state is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError as exc:
            raise TrainError(f"the starting weights do not fit this model's settings ({str(exc).strip().splitlines()[0]})") from exc
    diffusion = diffusion_for(setup.diffusion_cfg, mcfg.vocab_size, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    gens = {"data": torch.Generator().manual_seed(cfg.seed * 1009 + rank), "noise": torch.Generator(device=device).manual_seed(cfg.seed * 2003 + rank + 1)}
    torch.manual_seed(cfg.seed * 3001 + rank)
    step, seen, elapsed, history = 0, 0, 0.0, []
    state_path = out / (STATE if rank == 0 else f"train_state.rank{rank}.pt")
    if resume:
        if not state_path.is_file():
            raise TrainError(f"--resume: no {state_path.name} in {out}")
        st = torch.load(state_path, map_location=device, weights_only=True)
        try:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:  # another shape or a foreign file
            first = str(exc).strip().splitlines()[0]
            raise TrainError(f"--resume: {state_path} does not fit this model's settings ({first})") from exc
        for k, g in gens.items():
            g.set_state(st["rng"][k])
        torch.set_rng_state(st["rng"]["torch"])
        step, seen, elapsed = int(st["step"]), int(st["tokens_seen"]), float(st["elapsed_s"])
        if rank == 0:
            print(f"resuming at step {step} from {state_path}", file=sys.stderr, flush=True)
        if (out / "log.jsonl").is_file():  # earlier validations (for --keep-best and the saved meta)
            rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
            # rows written after the saved state (an interrupted run) are done again: drop them
            rows = [r for r in rows if r.get("eval", r).get("step", 0) <= step]
            history = [r["eval"] for r in rows if "eval" in r]
            if rank == 0:
                (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    model.train()

    def model_meta() -> dict[str, Any]:
        return {"step": step, "tokens_seen": seen * world, "train_seconds": round(elapsed, 3),
                "train_config": to_dict(cfg), "parameters": count_parameters(model),
                "world_size": world, "device": device, "validation": history[-1] if history else None, **(meta or {})}

    def save_model(folder: Path) -> None:
        sampler = dataclasses.replace(RECOMMENDED_SAMPLER, end_of_slot=setup.end_of_slot or cfg.slot_share > 0)
        checkpoint.save(folder, model, mcfg, tok, diffusion_cfg=setup.diffusion_cfg, sampler_cfg=sampler,
                        name=name, meta=model_meta(), lexicon=lexicon, lineage=lineage)

    def save() -> None:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": _rng_state(gens),
                    "step": step, "tokens_seen": seen, "elapsed_s": elapsed}, state_path)
        if rank == 0:
            save_model(out / "model")

    def log(row: dict[str, Any]) -> None:
        if rank == 0:
            with (out / "log.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")

    metrics: dict[str, Any] = {}
    t_log, tok_log = time.perf_counter(), 0

    def validate() -> None:
        nonlocal metrics
        metrics = evaluate_loss(model, mcfg.arch, diffusion, val.to(device), cfg.batch_size) | {"step": step, "elapsed_s": round(elapsed, 2)}
        best = min((h["nelbo_bits_per_token"] for h in history), default=math.inf)
        history.append(metrics)
        log({"eval": metrics})
        if keep_best and rank == 0 and metrics["nelbo_bits_per_token"] < best:
            save_model(out / "best")
        if rank == 0:
            print(f"\nvalidation at step {step}: {metrics['nelbo_bits_per_token']:.3f} bits/token, "
                  f"ppl bound {metrics['ppl_bound']:.1f}", file=sys.stderr)

    def out_of_time() -> bool:
        if cfg.max_seconds <= 0:
            return False
        spent = torch.tensor([elapsed], dtype=torch.float64)
        if world > 1:  # every rank stops at the same step
            if device.startswith("cuda"):
                spent = spent.to(device)
            torch.distributed.all_reduce(spent, op=torch.distributed.ReduceOp.MAX)
        return float(spent) >= cfg.max_seconds

    while step < cfg.max_steps and not out_of_time():
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg, elapsed)
        clean = None
        if mix is None:
            x0 = windows(stream, cfg.seq_len, cfg.batch_size, gens["data"])  # (B, L)
        else:
            x0, clean = mix.batch(stream, cfg.batch_size, gens["data"], gens["noise"], cfg.clean_prob)
        x0 = x0.to(device)
        loss = optimizer_step(net, mcfg.arch, diffusion, opt, x0, gens["noise"], cfg.clean_prob, cfg.grad_clip, clean)
        step += 1
        seen += x0.numel()
        tok_log += x0.numel()
        elapsed += time.perf_counter() - t0
        if rank == 0 and (step % log_every == 0 or step == cfg.max_steps):
            now = time.perf_counter()
            rate = tok_log * world / max(now - t_log, 1e-9)
            eta = (cfg.max_steps - step) * cfg.batch_size * cfg.seq_len * world / max(rate, 1e-9)
            done = step / cfg.max_steps
            if cfg.max_seconds > 0:
                eta, done = min(eta, max(0.0, cfg.max_seconds - elapsed)), max(done, min(1.0, elapsed / cfg.max_seconds))
            bar = "#" * int(30 * done)
            print(f"\r[{bar:<30}] step {step}/{cfg.max_steps} loss {loss.item():.4f} {rate:,.0f} tok/s ETA {eta / 60:.1f} min",
                  end="\n" if not sys.stderr.isatty() else "", file=sys.stderr, flush=True)
            log({"step": step, "loss": loss.item(), "tokens_per_s": rate, "lr": lr_at(step - 1, cfg, elapsed)})
            t_log, tok_log = now, 0
        if val is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            validate()
        if save_every and step % save_every == 0:
            save()
        if stop_after is not None and step >= stop_after:
            break
    # the time budget ended the run between validations (an interrupted run, stop_after, is not
    # validated here: its resumed log must equal a straight run's)
    if val is not None and (stop_after is None or step < stop_after) and (not history or history[-1]["step"] != step):
        validate()
    save()
    if world > 1:
        torch.distributed.barrier()
    return metrics


# ----- CLI -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m engine.train", description="Train a DiffDraft model (SFDLM, transformer denoiser, or causal baseline).")
    p.add_argument("--data", type=Path, required=True, help="a prepared corpus folder (train.jsonl, validation.jsonl) or documents engine.corpus can read")
    p.add_argument("--column", help="text column when --data is a CSV file")
    p.add_argument("--out", type=out_path, required=True, help="run folder: train_state.pt, model/, log.jsonl")
    p.add_argument("--config", type=Path, help='JSON with optional "model", "diffusion", "train" sections; flags override it')
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped, with its own settings (only --max-steps, --max-minutes and --eval-every may change)")
    p.add_argument("--init-from", type=Path, help="fine-tune: start from this model folder's weights, configs and tokenizer")
    p.add_argument("--feedback", type=Path, help="with --init-from: also train on this feedback folder (python -m storage.export training)")
    p.add_argument("--feedback-share", type=float, help="share of each batch drawn from --feedback (default 0.5)")
    p.add_argument("--slot-share", type=float, help="share of each batch drawn as template-shaped rows whose fills end in <eos> (engine.slot_data; default 0)")
    p.add_argument("--slot-tight", type=float, help="of the template-shaped fills that end early, the share whose slot is sized to them (default 0.7; the rest keep a longer slot, so <eos> runs are longer)")
    p.add_argument("--version", help="version label written into the model's manifest (default: the --out folder's name)")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.json to use (default: train one on the training split)")
    p.add_argument("--vocab-size", type=int, help="vocabulary size of a newly trained tokenizer (default: the model config's)")
    p.add_argument("--arch", choices=["sfdlm", "transformer"], help="denoiser network (default sfdlm)")
    p.add_argument("--objective", choices=["diffusion", "ar"], default=None, help="ar trains the causal transformer baseline")
    p.add_argument("--noise", choices=["uniform", "absorbing"], help="forward noise of the diffusion (default uniform)")
    p.add_argument("--d-model", type=int, help="model width")
    p.add_argument("--layers", type=int, help="number of blocks")
    p.add_argument("--seq-len", type=int, help="training window length in tokens")
    p.add_argument("--batch-size", type=int, help="windows per step per process")
    p.add_argument("--max-steps", type=int, help="optimizer steps in all")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--max-minutes", type=float, help="stop after this much training time; the learning-rate schedule runs over it")
    p.add_argument("--warmup-steps", type=int, help="linear warm-up steps")
    p.add_argument("--eval-every", type=int, help="validate every this many steps")
    p.add_argument("--save-every", type=int, default=0, help="also write train_state.pt and model/ every this many steps (0: only at the end)")
    p.add_argument("--keep-best", action="store_true", help="also keep the model with the best validation bound in OUT/best/")
    p.add_argument("--log-every", type=int, default=10, help="progress line every this many steps")
    p.add_argument("--seed", type=int, help="seed of weights, data order, noise")
    p.add_argument("--name", default=None, help="model name recorded in config.json (default: the architecture and noise)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when present, else cpu; under torchrun cuda:LOCAL_RANK)")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    return p


# what a resumed run may change: how long it trains and how often it validates
RESUME_MAY_CHANGE = {("train", "max_steps"), ("train", "max_seconds"), ("train", "eval_every")}
# model settings that fine-tuning (--init-from) may change: they leave every weight's shape alone
FINE_TUNE_MAY_CHANGE = {("model", "dropout"), ("model", "kernel_cache_mb"), ("model", "direct_max_len")}
FLAG_NAMES = {("model", "arch"): "--arch/--objective", ("model", "d_model"): "--d-model", ("model", "n_layers"): "--layers",
              ("diffusion", "noise"): "--noise", ("train", "seq_len"): "--seq-len", ("train", "batch_size"): "--batch-size",
              ("train", "lr"): "--lr", ("train", "warmup_steps"): "--warmup-steps", ("train", "seed"): "--seed"}


def resumed_sections(out: Path, given: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    """The settings of the run in `out` (its model/config.json, written with every train state),
    for --resume. What `given` asks for must agree with them, except RESUME_MAY_CHANGE: a resumed
    run with another window, width or learning rate would not continue the same run (and another
    shape would not even load), so a difference is an error that names each setting."""
    if not (out / STATE).is_file():
        raise TrainError(f"--resume: no {STATE} in {out}")
    try:
        raw = json.loads((out / "model" / "config.json").read_text())
        saved = {"model": dict(raw["model"]), "diffusion": dict(raw["diffusion"]), "train": dict(raw["meta"]["train_config"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"--resume: cannot read the run's settings from {out / 'model' / 'config.json'} ({exc})") from exc
    conflicts = differences(given, saved, RESUME_MAY_CHANGE, "the run")
    if conflicts:
        raise TrainError("--resume keeps the run's own settings, but this command asks for " + ", ".join(conflicts)
                         + "; only --max-steps, --max-minutes and --eval-every may change (drop the rest, or train into a new --out)")
    return saved


def differences(given: dict[tuple[str, str], Any], saved: dict[str, dict[str, Any]], may_change: set[tuple[str, str]],
                owner: str) -> list[str]:
    """What `given` asks for that differs from `saved` (only its sections) outside `may_change`,
    one phrase each: "--seq-len 256 (the run has 64)"."""
    return [f"{FLAG_NAMES.get(k, '.'.join(k))} {v!r} ({owner} has {saved[k[0]].get(k[1])!r})"
            for k, v in given.items() if k[0] in saved and k not in may_change and saved[k[0]].get(k[1]) != v]


def _fail(message: str) -> NoReturn:
    print(f"python -m engine.train: error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sections: dict[str, dict[str, Any]] = {"model": {}, "diffusion": {}, "train": {}}
    given: dict[tuple[str, str], Any] = {}  # (section, key) -> what --config and the flags ask for
    if args.config:
        try:
            raw = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            _fail(f"--config {args.config}: {exc}")
        for k, v in raw.items():
            if k not in sections or not isinstance(v, dict):
                _fail(f"--config {args.config}: unknown section {k!r} (expected model, diffusion, train)")
            given.update({(k, key): value for key, value in v.items()})
    flag = {("model", "arch"): "causal" if args.objective == "ar" else args.arch, ("model", "d_model"): args.d_model,
            ("model", "n_layers"): args.layers, ("diffusion", "noise"): args.noise, ("train", "seq_len"): args.seq_len,
            ("train", "batch_size"): args.batch_size, ("train", "max_steps"): args.max_steps, ("train", "lr"): args.lr,
            ("train", "warmup_steps"): args.warmup_steps, ("train", "eval_every"): args.eval_every, ("train", "seed"): args.seed,
            ("train", "max_seconds"): None if args.max_minutes is None else 60.0 * args.max_minutes,
            ("train", "feedback_share"): args.feedback_share, ("train", "slot_share"): args.slot_share,
            ("train", "slot_tight"): args.slot_tight}
    given.update({k: v for k, v in flag.items() if v is not None})
    tokenizer: Tokenizer | None = None
    init_state, lineage = None, None
    inherited_end = False
    if args.resume and (args.init_from or args.tokenizer or args.vocab_size):
        _fail("--resume continues the run in --out with its own weights and tokenizer; "
              "--init-from, --tokenizer and --vocab-size start a new run (give a new --out)")
    if args.feedback_share is not None and not args.feedback:
        _fail("--feedback-share needs --feedback DIR")
    if args.slot_tight is not None and not args.slot_share:
        _fail("--slot-tight shapes the template-shaped rows: give --slot-share as well")
    if args.feedback and not (args.init_from or args.resume):
        _fail("--feedback fine-tunes an existing model: give --init-from MODEL (or --resume such a fine-tune)")
    if args.feedback and not args.resume:
        given.setdefault(("train", "feedback_share"), 0.5)
    if args.init_from:
        if args.tokenizer or args.vocab_size:
            _fail("--init-from fine-tunes a model with its own tokenizer; --tokenizer and --vocab-size would not fit its weights")
        try:
            ck = checkpoint.load(args.init_from)
        except checkpoint.CheckpointError as exc:
            _fail(str(exc))
        sections["model"] = to_dict(ck.model_cfg)
        sections["diffusion"] = to_dict(ck.diffusion_cfg)
        changed = differences(given, {"model": sections["model"]}, FINE_TUNE_MAY_CHANGE, "the model")
        if changed:
            _fail(f"--init-from keeps the architecture of {args.init_from}, but this command asks for " + ", ".join(changed)
                  + " (drop those settings, or train from scratch without --init-from)")
        tokenizer, init_state = ck.tokenizer, ck.model.state_dict()
        inherited_end = ck.sampler_cfg.end_of_slot  # a fine-tune keeps writing fills that end
        lineage = {"version": args.version or args.out.resolve().name, "parent": ck.model_id}
    elif args.version:
        lineage = {"version": args.version}
    try:
        if args.resume:
            sections = resumed_sections(args.out, given)
        for (sec, key), value in given.items():
            sections[sec][key] = value
        tcfg = from_dict(TrainConfig, sections["train"])
        dcfg = from_dict(DiffusionConfig, sections["diffusion"])
        train_texts, val_texts = load_texts(args.data, args.column)
        if args.resume and (args.out / "model" / "tokenizer.json").is_file():
            tokenizer = Tokenizer.load(args.out / "model" / "tokenizer.json")
        elif args.tokenizer:
            tokenizer = Tokenizer.load(args.tokenizer)
        elif tokenizer is None:
            vocab = args.vocab_size or sections["model"].get("vocab_size", ModelConfig.vocab_size)
            tokenizer = Tokenizer.train(train_texts, vocab_size=vocab)
        sections["model"]["vocab_size"] = tokenizer.vocab_size
        mcfg = from_dict(ModelConfig, sections["model"])
        meta, mix = feedback_run(args, tokenizer, tcfg)
        if tcfg.slot_share:
            if mix is not None:
                raise TrainError("--slot-share and --feedback cannot be mixed in one run (fine-tune on one, then the other)")
            mix = SlotMix(train_texts, tokenizer, tcfg.seq_len, tcfg.slot_share, tcfg.slot_tight)
        if args.resume:
            lineage = checkpoint.read_lineage(args.out / "model") or None
            saved = json.loads((args.out / "model" / "config.json").read_text())
            started = saved["meta"].get("init_from")
            meta |= {"init_from": started} if started else {}
            inherited_end = bool(saved.get("sampler", {}).get("end_of_slot"))
        elif args.init_from:
            meta["init_from"] = str(args.init_from.resolve())
    except (ValueError, TypeError, OSError, TrainError, FeedbackError) as exc:
        _fail(str(exc))
    if tcfg.max_steps < 1 or tcfg.batch_size < 1 or tcfg.seq_len < 2:
        _fail("max_steps and batch_size must be >= 1 and seq_len >= 2")
    rank, world = _dist()
    device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")
    kept = kept_name(args)  # a fine-tune is a version of its parent: it keeps the parent's name
    name = args.name or kept or (mcfg.arch if mcfg.arch == "causal" else f"{mcfg.arch}-{dcfg.noise}")
    if rank == 0:
        print(f"training {name}: {len(train_texts):,} documents, vocab {mcfg.vocab_size}, d={mcfg.d_model}, "
              f"{mcfg.n_layers} layers, {world} process(es) on {device}", file=sys.stderr)
        if not val_texts:
            print(f"note: no validation documents in {args.data}: no validation bound is measured"
                  + (" and --keep-best keeps nothing" if args.keep_best else "")
                  + " (prepare the corpus with a validation share, engine.corpus prepare --split)", file=sys.stderr)
    try:
        metrics = train(Setup(mcfg, dcfg, tcfg, tokenizer, inherited_end), train_texts, val_texts, args.out, resume=args.resume,
                        init_state=init_state, device=device, log_every=args.log_every, save_every=args.save_every, name=name,
                        keep_best=args.keep_best, mix=mix, meta=meta, lineage=lineage)
        if rank == 0 and meta.get("init_from") and Path(meta["init_from"]).is_dir():
            record_forgetting_check(args, meta["init_from"], tcfg.seq_len, evaluate_loss)
    except (TrainError, checkpoint.CheckpointError) as exc:
        _fail(str(exc))
    except OSError as exc:  # the run folder could not be made or written
        _fail(f"cannot write the run in {args.out}: {exc.strerror or exc}")
    if rank == 0:
        print(json.dumps({"out": str(args.out / "model"), **metrics}))
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
