"""Dynamics generation speed: cached vs uncached, batch scaling, memory over a long rollout, FLOPs.

Random-init models (speed does not depend on the weights). Every timing is steady state: the time
window is full before the clock starts, so a cached frame attends to ``context - 1`` cached frames and
an uncached frame recomputes ``context`` frames in each of its K denoising passes.

Threads: batch-1 generation is many small matmuls, where extra OpenMP threads on busy cores cost more
than they give, so batch 1 always runs on one thread; batched runs use ``--threads`` (default 1).

On a GPU (``--device cuda``) every timing synchronises the device before reading the clock, the
memory rollout reports the device's allocated memory instead of the process's RSS, and
``--dtype bf16`` runs the sampler in bfloat16.

Examples:
    python benchmarks/bench_dynamics.py --preset nano --context 32 --json out.json   # the pair only
    python benchmarks/bench_dynamics.py --preset nano --decode --json full.json       # everything
    python benchmarks/bench_dynamics.py --device cuda --dtype bf16 --batches 1 16 64 256 1024
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lol_dreamer.io import atomic_write_json
from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel
from lol_dreamer.sampler import Sampler


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


DEVICE = torch.device("cpu")
DTYPE = torch.float32


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def device_mib() -> float:
    """Memory the process holds: RSS on the CPU, allocated tensors on a GPU (MiB)."""
    if DEVICE.type == "cuda":
        return torch.cuda.memory_allocated(DEVICE) / 2**20
    return rss_mib()


def build(preset: str, context: int, n_agent: int = 0) -> DynamicsModel:
    torch.manual_seed(0)
    cfg = DynamicsConfig.preset(preset, context=context, n_agent=n_agent)
    return DynamicsModel(cfg).eval().to(DEVICE)


def _ready(model: DynamicsModel, n: int, use_cache: bool, k: int, dtype: torch.dtype | None = None):
    """A sampler and a state whose time window is already full."""
    cfg = model.cfg
    s = Sampler(model, k=k, use_cache=use_cache, dtype=dtype or DTYPE)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    ctx = torch.randn(n, cfg.context - 1, cfg.n_z, cfg.d_z, generator=g, device=DEVICE).tanh()
    act = torch.zeros(n, cfg.context - 1, 9, dtype=torch.long, device=DEVICE)
    state = s.start(ctx, act, generator=g)
    return s, state, g


def ms_per_frame(
    model: DynamicsModel,
    n: int,
    use_cache: bool,
    frames: int,
    k: int = 4,
    dtype: torch.dtype | None = None,
    decoder: torch.nn.Module | None = None,
) -> tuple[float, float]:
    """Steady-state ``(wall, cpu)`` milliseconds per generated frame for ``n`` streams (per step).

    CPU time counts this process only; on a shared, busy machine it is the fairer of the two.
    """
    s, state, g = _ready(model, n, use_cache, k, dtype)
    act = torch.zeros(n, 9, dtype=torch.long, device=DEVICE)
    stream = decoder.decoder_stream(n) if decoder is not None else None
    for _ in range(2 if DEVICE.type == "cpu" else 5):  # warm-up
        z, _ = s.step(state, act, generator=g)
        if stream is not None:
            stream.step(z)
    _sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(frames):
        z, _ = s.step(state, act, generator=g)
        if stream is not None:
            stream.step(z)
    _sync()
    return (time.perf_counter() - t0) / frames * 1e3, (time.process_time() - c0) / frames * 1e3


def flops_per_frame(model: DynamicsModel, k: int = 4) -> int:
    """Model FLOPs of one cached frame (K denoising passes + the context pass) at batch 1."""
    s, state, g = _ready(model, 1, True, k, torch.float32)
    with FlopCounterMode(display=False) as fc:
        s.step(state, torch.zeros(1, 9, dtype=torch.long, device=DEVICE), generator=g)
    return int(fc.get_total_flops())


def rollout_memory(model: DynamicsModel, frames: int, k: int = 4) -> dict:
    """RSS (GPU: allocated memory) before, during and after a ``frames``-long cached rollout at batch 1."""
    s, state, g = _ready(model, 1, True, k)
    act = torch.zeros(1, 9, dtype=torch.long, device=DEVICE)
    samples = []
    t0 = time.perf_counter()
    start = device_mib()
    for f in range(frames):
        s.step(state, act, generator=g)
        if f % 250 == 0 or f == frames - 1:
            _sync()
            samples.append(device_mib())
    _sync()
    secs = time.perf_counter() - t0
    return {
        "frames": frames,
        "memory": "cuda_allocated" if DEVICE.type == "cuda" else "rss",
        "rss_start_mib": start,
        "rss_end_mib": samples[-1],
        "rss_max_mib": max(samples),
        "rss_growth_mib": samples[-1] - samples[0],
        "cache_frames": int(state.cache.entries().max()),
        "frames_per_s": frames / secs,
    }


def load_decoder(preset: str):
    from lol_dreamer.models.tokenizer import TransformerTokenizer
    from lol_dreamer.models.tokenizer_config import TokenizerConfig

    torch.manual_seed(0)
    return TransformerTokenizer(TokenizerConfig.preset(preset)).eval().to(DEVICE)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="nano", help="dynamics size preset")
    p.add_argument(
        "--context",
        type=int,
        default=None,
        help="measure only the cached/uncached pair at this context",
    )
    p.add_argument(
        "--contexts", type=int, nargs="+", default=[16, 32, 64], help="contexts of the full run"
    )
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64], help="stream counts")
    p.add_argument("--k", type=int, default=4, help="denoising steps per frame")
    p.add_argument("--frames", type=int, default=20, help="timed frames per measurement")
    p.add_argument(
        "--rollout", type=int, default=2000, help="frames of the memory rollout (0 = skip)"
    )
    p.add_argument("--threads", type=int, default=1, help="threads for batched (N > 1) runs")
    p.add_argument(
        "--decode", action="store_true", help="also time nano tokenizer decoding per frame"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    p.add_argument(
        "--dtype", default="fp32", choices=("fp32", "bf16"), help="sampler precision (default fp32)"
    )
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args()
    global DEVICE, DTYPE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "--device cuda: no CUDA device is visible to PyTorch; run on a GPU machine"
        )
    DTYPE = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.set_num_threads(1)
    res: dict = {"preset": args.preset, "k": args.k, "threads_batch1": 1, "device": str(DEVICE),
                 "dtype": args.dtype}  # fmt: skip
    if DEVICE.type == "cuda":
        res["device_name"] = torch.cuda.get_device_name(DEVICE)

    if args.context is not None:
        model = build(args.preset, args.context)
        wc, cc = ms_per_frame(model, 1, True, args.frames, args.k)
        wu, cu = ms_per_frame(model, 1, False, max(3, args.frames // 4), args.k)
        res.update(context=args.context, ms_per_frame_cached=wc, ms_per_frame_uncached=wu)
        res.update(cpu_ms_per_frame_cached=cc, cpu_ms_per_frame_uncached=cu)
        res.update(speedup=wu / wc, cpu_speedup=cu / cc)
        print(
            f"{'context':>8} {'':>5} {'cached ms/frame':>16} {'uncached ms/frame':>18} {'speedup':>8}"
        )
        print(f"{args.context:>8} {'wall':>5} {wc:>16.2f} {wu:>18.2f} {wu / wc:>7.1f}x")
        print(f"{'':>8} {'cpu':>5} {cc:>16.2f} {cu:>18.2f} {cu / cc:>7.1f}x")
    else:
        rows = []
        print("batch 1, one thread; wall ms (CPU ms) per frame; GFLOP/s from CPU time")
        print(
            f"{'context':>8} {'cached':>16} {'uncached':>18} {'speedup':>8} {'MFLOP/frame':>12} {'GFLOP/s':>8}"
        )
        for c in args.contexts:
            model = build(args.preset, c)
            wc, cc = ms_per_frame(model, 1, True, args.frames, args.k)
            wu, cu = ms_per_frame(model, 1, False, max(3, args.frames // 4), args.k)
            flops = flops_per_frame(model, args.k)
            gfs = flops / (cc * 1e-3) / 1e9
            rows.append(
                dict(context=c, ms_cached=wc, ms_uncached=wu, cpu_ms_cached=cc, cpu_ms_uncached=cu,
                     speedup=wu / wc, cpu_speedup=cu / cc, mflop_per_frame=flops / 1e6, gflop_per_s=gfs)
            )  # fmt: skip
            print(f"{c:>8} {wc:>7.1f} ({cc:>6.1f}) {wu:>8.1f} ({cu:>7.1f}) {cu / cc:>7.1f}x "
                  f"{flops / 1e6:>12.1f} {gfs:>8.2f}")  # fmt: skip
        res["contexts"] = rows
        model = build(args.preset, args.contexts[0])
        res["params"] = model.num_params()
        print(f"\nbatched cached generation, context {args.contexts[0]}")
        print(
            f"{'streams':>8} {'threads':>8} {'ms/step':>10} {'cpu ms':>10} {'frames/s':>10} {'(cpu)':>10}"
        )
        brows = []
        for n in args.batches:
            torch.set_num_threads(1 if n == 1 else args.threads)
            ms, cpu = ms_per_frame(model, n, True, max(4, args.frames // 2), args.k)
            th = torch.get_num_threads()
            brows.append(dict(streams=n, threads=th, ms_per_step=ms, cpu_ms_per_step=cpu,
                              frames_per_s=n / ms * 1e3, cpu_frames_per_s=n / cpu * 1e3))  # fmt: skip
            print(
                f"{n:>8} {th:>8} {ms:>10.2f} {cpu:>10.2f} {n / ms * 1e3:>10.1f} {n / cpu * 1e3:>10.1f}"
            )
        torch.set_num_threads(1)
        res["batched"] = brows
        if args.decode:
            dec = load_decoder(args.preset)
            ms, cpu = ms_per_frame(model, 1, True, args.frames, args.k, decoder=dec)
            res["interactive"] = dict(ms_per_frame_with_decode=ms, cpu_ms_per_frame_with_decode=cpu,
                                      frames_per_s=1e3 / ms, cpu_frames_per_s=1e3 / cpu)  # fmt: skip
            print(f"\nbatch 1 + {args.preset} tokenizer decode: wall {ms:.1f} ms/frame ({1e3 / ms:.1f} frames/s), "
                  f"CPU {cpu:.1f} ms/frame ({1e3 / cpu:.1f} frames/s)")  # fmt: skip
        if args.rollout:
            mem = rollout_memory(model, args.rollout, args.k)
            res["rollout"] = mem
            what = "allocated" if DEVICE.type == "cuda" else "RSS"
            print(f"\n{args.rollout}-frame cached rollout at batch 1: {what} {mem['rss_start_mib']:.1f} → "
                  f"{mem['rss_end_mib']:.1f} MiB (max {mem['rss_max_mib']:.1f}, growth "
                  f"{mem['rss_growth_mib']:+.1f} MiB), cache holds {mem['cache_frames']} frames, "
                  f"{mem['frames_per_s']:.1f} frames/s")  # fmt: skip
    if args.json is not None:
        atomic_write_json(args.json, res)
        print(f"wrote {args.json}")
    else:
        print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list | dict)}))


if __name__ == "__main__":
    main()
