"""Forward time and peak memory of the SFDLM denoiser vs the transformer denoiser against L.

    python -m bench.scaling [--lengths 128,256,...] [--batch 1] [--repeats N] [--json]
                            [--threads T]

What is timed: the WHOLE forward `model(x_t, t, clean)` from token ids to logits over all
L positions and the full vocabulary (embedding, time MLP, every block, final norm, tied head),
under torch.inference_mode, identical for both models. Both models are built once with the
same config (equal width and depth) and are timed ALTERNATELY (sfdlm, transformer, sfdlm, ...)
after one warm-up call each, so load from other processes hits both; the median is reported.
The SFDLM's warm-up call fills its per-length kernel cache, as at inference.

Peak memory: for each (model, L) a FRESH child process builds the model, records its current
RSS, runs two forwards (warm-up + one more, so caches count) and reports peak RSS minus
RSS_after_build in MiB (includes the logits, B*L*V*4 bytes). The peak is resource.getrusage's
ru_maxrss, read as /proc VmHWM after resetting it post-build, because ru_maxrss survives
execve on Linux and would otherwise report the (large) parent's RSS.

Live memory: the same child then runs a third forward under a dispatch mode that reads glibc's
heap bytes in use (mallinfo2) after every aten op; the peak over post-build is the live column.
It is what the tensors need, independent of how the heap is laid out (RSS also counts freed
blocks the heap keeps, which varies from run to run); scratch allocated and freed inside one
kernel is not seen.

glibc returns large freed blocks to the system by default, which makes every big tensor page
fault again on every call; unless --keep-malloc-env is given, the script re-executes itself
with MALLOC_MMAP_MAX_=0 and MALLOC_TRIM_THRESHOLD_=1 GiB (as .ci/dev does). Both models get it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from engine.cli import Parser

MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
DEFAULT_LENGTHS = "128,256,512,1024,2048,4096,8192,16384"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(prog="python -m bench.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default=DEFAULT_LENGTHS,
                   help="comma-separated sequence lengths L to measure (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="batch size B (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per model and length after one warm-up; the median is "
                        "reported. Lengths >= 8192 use min(repeats, 3) because the "
                        "transformer takes seconds there (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {L, sfdlm_ms, transformer_ms, sfdlm_peak_mb, "
                        "transformer_peak_mb, sfdlm_live_mb, transformer_live_mb} instead of the table")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads for both models and the memory children "
                        "(0 = torch's default, the number of cores)")
    p.add_argument("--d-model", type=int, default=256, help="model width D (default: 256)")
    p.add_argument("--layers", type=int, default=6, help="number of blocks (default: 6)")
    p.add_argument("--d-state", type=int, default=32,
                   help="SSM state size of the SFDLM, d_state // 2 complex modes per channel "
                        "(default: %(default)s, the shipped default model's; ModelConfig's is 64)")
    p.add_argument("--vocab", type=int, default=4096,
                   help="vocabulary size V (default: %(default)s, the shipped default model's)")
    p.add_argument("--memory-repeats", type=int, default=5,
                   help="fresh child processes per (model, L); the median peak is reported "
                        "(allocator placement makes single RSS readings vary by up to 40 %% at "
                        "L = 16384) (default: %(default)s)")
    p.add_argument("--kernel-cache-mb", type=float, default=None,
                   help="override ModelConfig.kernel_cache_mb (SFDLM kernel cache per layer, "
                        "MiB) to measure the cache / memory trade-off (default: the config's)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory child processes (columns show -1)")
    p.add_argument("--keep-malloc-env", action="store_true",
                   help="do not re-execute with the glibc malloc settings described above")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    p.add_argument("--child", nargs=2, metavar=("ARCH", "L"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build(arch: str, args: argparse.Namespace):
    import torch

    from engine.config import ModelConfig
    from engine.build import build_model

    torch.manual_seed(args.seed)
    extra = {} if args.kernel_cache_mb is None else {"kernel_cache_mb": args.kernel_cache_mb}
    cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, d_state=args.d_state,
                      arch=arch, **extra)
    return build_model(cfg).eval()


def make_inputs(length: int, args: argparse.Namespace):
    import torch

    g = torch.Generator().manual_seed(args.seed + length)
    x = torch.randint(0, args.vocab, (args.batch, length), generator=g)  # (B, L)
    t = torch.rand(args.batch, generator=g)  # (B,)
    clean = torch.zeros(args.batch, length, dtype=torch.bool)  # (B, L)
    return x, t, clean


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def vm_hwm_mb() -> float | None:
    """Peak RSS of this process image (VmHWM), or None where /proc does not report it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return None


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def heap_in_use() -> int | None:
    """Bytes malloc has handed out and not got back (glibc mallinfo2, all arenas), or None where
    that is not available. Unlike RSS this does not count freed blocks the heap still holds."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return None
    return int(info.uordblks + info.hblkhd)


def live_peak_forward(model, inputs) -> float | None:
    """Peak heap bytes in use (MiB above the start), sampled after every aten op of one forward.
    Scratch that a single kernel allocates and frees inside itself is not seen."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    if heap_in_use() is None:
        return None

    class Sampler(TorchDispatchMode):
        peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            Sampler.peak = max(Sampler.peak, heap_in_use() or 0)
            return out

    with torch.inference_mode(), Sampler():  # the mode's first use allocates ~20 MiB once
        torch.ones(2).add_(1)
    start = Sampler.peak = heap_in_use() or 0
    with torch.inference_mode(), Sampler():
        model(*inputs)
    return (Sampler.peak - start) / 2**20


def child_memory(args: argparse.Namespace) -> None:
    """Runs in a fresh process: print the peak RSS increase of two forwards over post-build.

    ru_maxrss is the primary source, but on Linux it survives execve: a child started from a
    big parent reports the parent's RSS. So where /proc allows, the post-build peak is reset
    and read back as VmHWM (same quantity, per process image); otherwise ru_maxrss is used.
    """
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    arch, length = args.child[0], int(args.child[1])
    model = build(arch, args)
    x, t, clean = make_inputs(length, args)
    base = rss_mb()
    base_heap = heap_in_use()
    use_hwm = reset_hwm() and vm_hwm_mb() is not None
    with torch.inference_mode():
        for _ in range(2):
            model(x, t, clean)
    if use_hwm:
        peak = vm_hwm_mb()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    before = heap_in_use()
    live = live_peak_forward(model, (x, t, clean))  # a third forward, sampled op by op
    held = None if before is None or base_heap is None else (before - base_heap) / 2**20
    print(json.dumps({"peak_mb": max(0.0, peak - base),
                      "live_mb": None if live is None or held is None else round(live + held, 1)}))


def peak_memory(arch: str, length: int, args: argparse.Namespace) -> dict[str, float | None]:
    cmd = [sys.executable, "-m", "bench.scaling", "--child", arch, str(length),
           "--batch", str(args.batch), "--threads", str(args.threads), "--d-model",
           str(args.d_model), "--layers", str(args.layers), "--vocab", str(args.vocab), "--d-state", str(args.d_state),
           "--seed", str(args.seed), "--keep-malloc-env"]
    if args.kernel_cache_mb is not None:
        cmd += ["--kernel-cache-mb", str(args.kernel_cache_mb)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_models(length: int, models: dict, args: argparse.Namespace) -> dict[str, float]:
    import torch

    x, t, clean = make_inputs(length, args)
    repeats = args.repeats if length < 8192 else min(args.repeats, 3)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for m in models.values():
            m(x, t, clean)  # warm-up (fills kernel / DFT / RoPE caches)
        for _ in range(repeats):
            for name, m in models.items():  # alternate so both see the same machine load
                t0 = time.perf_counter()
                m(x, t, clean)
                times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(v) for name, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.keep_malloc_env and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        env = {**os.environ, **MALLOC_ENV}
        os.execve(sys.executable, [sys.executable, "-m", "bench.scaling",
                                   *(argv if argv is not None else sys.argv[1:])], env)
    if args.child:
        child_memory(args)
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [int(v) for v in args.lengths.split(",") if v]
    models = {"sfdlm": build("sfdlm", args), "transformer": build("transformer", args)}
    rows = []
    if not args.json:
        print(f"# whole forward (ids -> logits over V={args.vocab}), B={args.batch}, "
              f"D={args.d_model}, layers={args.layers}, d_state={args.d_state}, threads={torch.get_num_threads()}, "
              f"torch {torch.__version__}; time = median of alternating calls; "
              f"peak = max RSS increase over post-build RSS in a fresh process; live = peak heap "
              f"bytes in use over post-build, sampled between aten ops (glibc mallinfo2)")
        print(f"{'L':>6} {'sfdlm_ms':>10} {'transformer_ms':>15} {'speedup':>8} "
              f"{'sfdlm_peak_mb':>14} {'transformer_peak_mb':>20} {'sfdlm_live_mb':>14} "
              f"{'transformer_live_mb':>20}", flush=True)
    for length in lengths:
        ms = time_models(length, models, args)
        mem: dict[str, float] = {}
        live: dict[str, float | None] = {}
        for a in models:
            reads = [] if args.no_memory else [peak_memory(a, length, args) for _ in range(max(1, args.memory_repeats))]
            mem[a] = statistics.median(r["peak_mb"] for r in reads) if reads else -1.0
            lv = [r["live_mb"] for r in reads if r.get("live_mb") is not None]
            live[a] = statistics.median(lv) if lv else None
        row = {"L": length, "sfdlm_ms": round(ms["sfdlm"], 2),
               "transformer_ms": round(ms["transformer"], 2),
               "sfdlm_peak_mb": round(mem["sfdlm"], 1),
               "transformer_peak_mb": round(mem["transformer"], 1),
               "sfdlm_live_mb": live["sfdlm"], "transformer_live_mb": live["transformer"]}
        rows.append(row)
        if not args.json:
            lv = " ".join(f"{'-' if v is None else f'{v:.1f}':>{w}}" for v, w in
                          ((live["sfdlm"], 14), (live["transformer"], 20)))
            print(f"{length:>6} {row['sfdlm_ms']:>10.1f} {row['transformer_ms']:>15.1f} "
                  f"{ms['transformer'] / ms['sfdlm']:>7.2f}x {row['sfdlm_peak_mb']:>14.1f} "
                  f"{row['transformer_peak_mb']:>20.1f} {lv}", flush=True)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
