"""The SFDLM's own layers from another checkout against this one's, timed alternately in one process.

    git worktree add /tmp/base <commit>          # the code to compare against
    python -m bench.layers_ab --base /tmp/base [--d-model 256] [--layers 6] [--vocab 8192]
                              [--seq-len 256] [--batch-size 32] [--threads T] [--repeats N] [--json]

Changes to the SFDLM's own layers (engine/ssm.py, engine/fourier_mlp.py and the FFT machinery of
engine/fft.py; engine/layers.py in older checkouts) are small against the noise of a shared machine
when the two versions are timed by separate runs minutes apart (run to run, a training step here
moves by 5-10 %). This benchmark loads the other checkout's layers as modules of their own and
times, in one process and ALTERNATELY (base, then this checkout, every round):

  ssm, fourier  one BidirectionalSSM / ComplexFourierMLP, forward plus backward of the output's
                sum on a (B, L, D) input; both versions built from the same seed
  step          the whole SFDLM training step (engine.train.optimizer_step), one model whose
                blocks' SSM and Fourier layers are the base version's and one whose are this
                checkout's, with the same weights (state_dict copied), the same batch and the
                same noise draws

Medians over the rounds after one warm-up round, and the median of the per-round ratios
(this checkout / base; below 1 is faster). The rest of the model (embedding, adaLN, channel MLP,
head and loss, optimizer) is this checkout's in both.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch

from bench.train_step import FIRST_ID, add_shape_arguments, forward_backward, training_diffusion
from engine.build import build_model
from engine.cli import Parser
from engine.config import ModelConfig, TrainConfig
from engine.fourier_mlp import ComplexFourierMLP
from engine.ssm import BidirectionalSSM
from engine.train import optimizer_step

LAYER_MODULES = ("fft", "ssm", "fourier_mlp")  # in import order: the latter two import engine.fft

# this checkout's layers, in the shape load_layers gives a base checkout's
here = ModuleType("bench_this_layers")
here.BidirectionalSSM, here.ComplexFourierMLP = BidirectionalSSM, ComplexFourierMLP


def _load(path: Path, name: str) -> ModuleType:
    """The Python file `path` as a module named `name`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --base must be a checkout of this repository")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(mod)
    return mod


def load_layers(checkout: Path) -> ModuleType:
    """The checkout's BidirectionalSSM and ComplexFourierMLP in a module named bench_base_layers.

    A checkout with engine/ssm.py has them in engine/ssm.py and engine/fourier_mlp.py over
    engine/fft.py: each file is loaded as a module of its own (bench_base_fft, ...), with
    `engine.fft`, ... standing for the checkout's versions while they load, so that their
    imports bind to one another and not to this checkout's. An older checkout has them all in
    engine/layers.py, loaded as bench_base_layers itself."""
    folder = Path(checkout) / "engine"
    if not (folder / "ssm.py").is_file():
        return _load(folder / "layers.py", "bench_base_layers")
    saved = {name: sys.modules.get(f"engine.{name}") for name in LAYER_MODULES}
    try:
        for name in LAYER_MODULES:
            sys.modules[f"engine.{name}"] = _load(folder / f"{name}.py", f"bench_base_{name}")
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(f"engine.{name}", None)
            else:
                sys.modules[f"engine.{name}"] = mod
    out = ModuleType("bench_base_layers")
    out.BidirectionalSSM = sys.modules["bench_base_ssm"].BidirectionalSSM
    out.ComplexFourierMLP = sys.modules["bench_base_fourier_mlp"].ComplexFourierMLP
    sys.modules[out.__name__] = out
    return out


def own_layers(mod: ModuleType, cfg: ModelConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    """`mod`'s BidirectionalSSM and ComplexFourierMLP, built as engine.model.SFDLMBlock builds them."""
    ssm = mod.BidirectionalSSM(cfg.d_model, cfg.d_state, init=cfg.ssm_init, cache_mb=cfg.kernel_cache_mb,
                               direct_max_len=cfg.direct_max_len, gate=cfg.ssm_gate)
    fourier = mod.ComplexFourierMLP(cfg.d_model, cfg.fourier_blocks, cfg.fourier_mult,
                                    direct_max_len=cfg.direct_max_len)
    return ssm, fourier


def with_layers(model: torch.nn.Module, mod: ModuleType, cfg: ModelConfig) -> torch.nn.Module:
    """`model` (an SFDLM) with every block's SSM and Fourier layer rebuilt from `mod`, weights kept."""
    for block in model.blocks:
        ssm, fourier = own_layers(mod, cfg)
        ssm.load_state_dict(block.ssm.state_dict())
        fourier.load_state_dict(block.fourier.state_dict())
        block.ssm, block.fourier = ssm, fourier
    return model


def parts(base_mod: ModuleType, cfg: ModelConfig, B: int, L: int) -> dict[str, dict[str, Callable[[], None]]]:
    """part -> {"base": run, "this": run}: callables doing one forward + backward (or step)."""
    x = torch.randn(B, L, cfg.d_model, generator=torch.Generator().manual_seed(1), requires_grad=True)  # (B, L, D)
    out: dict[str, dict[str, Callable[[], None]]] = {"ssm": {}, "fourier": {}, "step": {}}
    for tag, mod in (("base", base_mod), ("this", here)):
        torch.manual_seed(0)
        ssm, fourier = own_layers(mod, cfg)
        out["ssm"][tag], out["fourier"][tag] = forward_backward(ssm, x), forward_backward(fourier, x)
    diffusion = training_diffusion(cfg.vocab_size)
    x0 = torch.randint(FIRST_ID, cfg.vocab_size, (B, L), generator=torch.Generator().manual_seed(2))  # (B, L)
    for tag, mod in (("base", base_mod), ("this", here)):
        torch.manual_seed(0)
        model = build_model(cfg)
        if mod is not here:
            model = with_layers(model, mod, cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(3)

        def step(model=model, opt=opt, gen=gen) -> None:
            optimizer_step(model, "sfdlm", diffusion, opt, x0, gen, TrainConfig.clean_prob, TrainConfig.grad_clip)
        out["step"][tag] = step
    return out


def measure(base_mod: ModuleType, cfg: ModelConfig, B: int, L: int, repeats: int) -> dict[str, dict[str, float]]:
    """part -> {"base": median ms, "this": median ms, "ratio": median of this / base per round}."""
    ps = parts(base_mod, cfg, B, L)
    times = {p: {"base": [], "this": []} for p in ps}
    for i in range(repeats + 1):  # round 0 warms up
        for p, runs in ps.items():
            for tag, run in runs.items():
                t0 = time.perf_counter()
                run()
                if i:
                    times[p][tag].append((time.perf_counter() - t0) * 1e3)
    return {p: {"base": statistics.median(t["base"]), "this": statistics.median(t["this"]),
                "ratio": statistics.median(a / b for a, b in zip(t["this"], t["base"]))}
            for p, t in times.items()}


def table(res: dict[str, dict[str, float]]) -> str:
    lines = ["| part | base, ms | this checkout, ms | this / base (median of rounds) |", "|---|---|---|---|"]
    for p, r in res.items():
        lines.append(f"| {p} | {r['base']:,.1f} | {r['this']:,.1f} | {r['ratio']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m bench.layers_ab", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, type=Path, help="a checkout (e.g. a git worktree) whose layers to compare against")
    add_shape_arguments(p, repeats=8)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        base_mod = load_layers(args.base)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, arch="sfdlm")
    res = measure(base_mod, cfg, args.batch_size, args.seq_len, args.repeats)
    if args.json:
        print(json.dumps({"base": str(args.base), "threads": torch.get_num_threads(), "batch_size": args.batch_size,
                          "seq_len": args.seq_len, "parts": res}, indent=2))
    else:
        print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), B = {args.batch_size}, "
              f"L = {args.seq_len}, medians of {args.repeats} alternating rounds; base: {args.base}")
        print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
