"""Where a training step's time goes: the SFDLM and the transformer denoiser, part by part.

    python -m bench.train_step [--d-model 256] [--layers 6] [--vocab 8192] [--seq-len 256]
                               [--batch-size 32] [--noise uniform|absorbing] [--threads T]
                               [--repeats N] [--json]

Both denoisers are built as bench.quality builds them (equal width and depth; the transformer's
channel MLP widened to the SFDLM's parameter count) and timed ALTERNATELY, part after part and
model after model in every round, so load from other processes hits all parts alike; medians
over the rounds after one warm-up round are reported. Each part is forward plus backward on
inputs of the training shape (B, L, D), with the gradient of the output's sum:

  step         the whole training step, the training loop's own (engine.train.optimizer_step):
               loss (uniform noise, or --noise absorbing) with clean spans in half of the
               windows, backward, gradient
               clipping, AdamW update
  ssm, fourier the SFDLM's own sublayers (one block's BidirectionalSSM, ComplexFourierMLP)
  attention    the transformer's own sublayer (one block's SelfAttention, not causal)
  mlp          the channel MLP (one block's; each model's own: the transformer's is the wider
               one at run 2's size, mlp_mult 5 against 4, which is how its parameters match)
  head + loss  the tied 8,192-way head and the noise's integrand on (B, L, D) features,
               fused as the loss runs them (head_sum: under absorbing noise only the masked
               positions' logits are formed)
  head + loss, unfused
               the same with the (B, L, V) logits formed whole and then the integrand (the path
               the loss keeps for callables without a tied head); for comparison only, not part
               of the step
  rest         step - layers x (own sublayers + mlp) - head + loss: embeddings, time MLP,
               adaLN, norms, residuals, long skips, clipping and the optimizer update

Parts are timed alone, the step as a whole, so `rest` also carries what a part costs more or less
inside the step than alone (caches, allocator state); on a noisy machine it can come out negative.
The summary gives each model's training tokens/s, their ratio, and the ratio the SFDLM would
reach if its own sublayers were twice as fast, or free (the transformer unchanged): how much a
faster SSM and Fourier layer can buy at this shape at most (Amdahl's law).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from bench.quality import matched
from engine.build import build_model, count_parameters
from engine.cli import Parser
from engine.config import DiffusionConfig, ModelConfig, TrainConfig
from engine.diffusion import make_diffusion
from engine.tokenizer import MASK
from engine.train import optimizer_step

FIRST_ID = 3  # windows draw ids from FIRST_ID..V-1, leaving the specials <pad>, <mask>, <bos> out
OWN = {"sfdlm": ("ssm", "fourier"), "transformer": ("attention",)}
UNFUSED = "head + loss, unfused"  # timed for comparison only: not part of the step


def training_diffusion(vocab_size: int, noise: str = "uniform"):
    """The diffusion the benchmarks train with: uniform noise unless asked (the specials below
    FIRST_ID forbidden; under absorbing noise the tokenizer's <mask> id is the mask)."""
    return make_diffusion(DiffusionConfig(noise=noise), vocab_size, mask_id=MASK if noise == "absorbing" else None,
                          forbidden_ids=range(FIRST_ID))


def forward_backward(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    """A callable running f(x), then the backward of its sum (x's gradient dropped after)."""
    def run() -> None:
        f(x).sum().backward()
        x.grad = None
    return run


def add_shape_arguments(p: argparse.ArgumentParser, repeats: int) -> None:
    """The model, batch and timing options both benchmarks take (run 2's shape by default)."""
    p.add_argument("--d-model", type=int, default=256, help="model width")
    p.add_argument("--layers", type=int, default=6, help="model depth")
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary size (random ids; no tokenizer needed)")
    p.add_argument("--seq-len", type=int, default=256, help="training window L")
    p.add_argument("--batch-size", type=int, default=32, help="windows per step B")
    p.add_argument("--repeats", type=int, default=repeats, help="timed rounds after one warm-up round; medians reported")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the tables")


def parts(arch: str, model: torch.nn.Module, diffusion, B: int, L: int, gen: torch.Generator,
          clean_prob: float = TrainConfig.clean_prob, grad_clip: float = TrainConfig.grad_clip) -> dict[str, Callable[[], None]]:
    """name -> a callable running that part's forward and backward once."""
    d, V = model.cfg.d_model, model.cfg.vocab_size
    block = model.blocks[0]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(B, L, d, requires_grad=True)  # (B, L, D)
    x0 = torch.randint(FIRST_ID, V, (B, L), generator=gen)  # (B, L)

    def step() -> None:
        optimizer_step(model, arch, diffusion, opt, x0, gen, clean_prob, grad_clip)

    t = torch.rand(B, generator=gen)  # (B,)
    x_t = diffusion.corrupt(x0, t, gen)  # (B, L)

    clean = torch.zeros(B, L, dtype=torch.bool)

    def head_loss() -> None:  # as the loss computes it: fused, the logits a block at a time
        diffusion.head_sum(x, model.head_weight(), x0, x_t, t, clean).backward()
        x.grad = None

    def head_loss_unfused() -> None:  # the (B, L, V) logits formed whole, then the integrand
        diffusion.integrand(x0, x_t, model.head(x), t).sum().backward()
        x.grad = None

    out = {"step": step}
    if arch == "sfdlm":
        out |= {"ssm": forward_backward(block.ssm, x), "fourier": forward_backward(block.fourier, x)}
    else:
        out["attention"] = forward_backward(lambda h: block.attn(h, causal=False), x)
    out |= {"mlp": forward_backward(block.mlp, x), "head + loss": head_loss, UNFUSED: head_loss_unfused}
    return out


def measure(base: ModelConfig, B: int, L: int, repeats: int, noise: str = "uniform") -> dict[str, dict]:
    """Per model: parameters, median ms of every part, per-step composition and tokens/s."""
    diffusion = training_diffusion(base.vocab_size, noise)
    runs = {}
    for arch in OWN:
        torch.manual_seed(0)
        model = build_model(matched(base, arch))
        runs[arch] = (model, parts(arch, model, diffusion, B, L, torch.Generator().manual_seed(0)))
    times: dict[str, dict[str, list[float]]] = {a: {p: [] for p in ps} for a, (_, ps) in runs.items()}
    for i in range(repeats + 1):  # round 0 warms up
        for arch, (_, ps) in runs.items():
            for name, run in ps.items():
                t0 = time.perf_counter()
                run()
                if i:
                    times[arch][name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for arch, (model, _) in runs.items():
        ms = {p: statistics.median(v) for p, v in times[arch].items()}
        n = model.cfg.n_layers
        own = n * sum(ms[p] for p in OWN[arch])
        rest = ms["step"] - own - n * ms["mlp"] - ms["head + loss"]
        out[arch] = {"parameters": count_parameters(model), "ms": ms, "layers": n,
                     "own_ms_per_step": own, "rest_ms": rest,
                     "tokens_per_s": B * L / ms["step"] * 1e3}
    return out


def summary(res: dict[str, dict]) -> dict[str, float]:
    """Tokens/s ratio SFDLM / transformer now, with the SFDLM's own sublayers 2x faster, free."""
    sf, tr = res["sfdlm"], res["transformer"]
    step_sf, step_tr = sf["ms"]["step"], tr["ms"]["step"]
    own = sf["own_ms_per_step"]
    return {"ratio": step_tr / step_sf, "ratio_own_2x": step_tr / (step_sf - own / 2),
            "ratio_own_free": step_tr / (step_sf - own)}


def table(res: dict[str, dict], B: int, L: int) -> str:
    lines = []
    for arch, r in res.items():
        n, ms = r["layers"], r["ms"]
        lines += [f"\n{arch}: {r['parameters']:,} parameters, {r['tokens_per_s']:,.0f} training tokens/s",
                  "| part | ms per call | calls per step | ms per step | share of the step |",
                  "|---|---|---|---|---|"]
        step = ms["step"]
        rows = [(p, ms[p], n) for p in (*OWN[arch], "mlp")] + [("head + loss", ms["head + loss"], 1)]
        for name, one, calls in rows:
            lines.append(f"| {name} | {one:,.1f} | {calls} | {one * calls:,.0f} | {one * calls / step:.0%} |")
        lines.append(f"| rest | | | {r['rest_ms']:,.0f} | {r['rest_ms'] / step:.0%} |")
        lines.append(f"| **step** | {step:,.1f} | 1 | {step:,.0f} | 100% |")
        lines.append(f"| ({UNFUSED}, not in the step: fused / unfused {ms['head + loss'] / ms[UNFUSED]:.2f}) "
                     f"| {ms[UNFUSED]:,.1f} | | | |")
    s = summary(res)
    lines += [f"\nB = {B}, L = {L}: SFDLM / transformer training tokens/s {s['ratio']:.3f}x; "
              f"with the SFDLM's own sublayers (SSM + Fourier) twice as fast {s['ratio_own_2x']:.3f}x, "
              f"free {s['ratio_own_free']:.3f}x"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.train_step", description=__doc__.splitlines()[0])
    add_shape_arguments(p, repeats=5)
    p.add_argument("--noise", choices=("uniform", "absorbing"), default="uniform",
                   help="the noise the step trains with and the head + loss integrate (default uniform)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers)
    res = measure(base, args.batch_size, args.seq_len, args.repeats, args.noise)
    if args.json:
        print(json.dumps({"config": {**dataclasses.asdict(base), "seq_len": args.seq_len, "batch_size": args.batch_size, "noise": args.noise,
                                     "threads": torch.get_num_threads()}, "models": res, "summary": summary(res)}, indent=2))
    else:
        print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.noise} noise, "
              f"medians of {args.repeats} alternating rounds")
        print(table(res, args.batch_size, args.seq_len))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
