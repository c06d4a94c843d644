"""Batched dream throughput: one batch on T threads vs shards on one thread each, interleaved.

Machine noise (other tenants, frequency changes) moves single runs by ±25 % on a shared 2-core VM,
so this script alternates the configurations inside one process and reports the median of
``--reps`` timings of each, in env steps per wall second (``DreamVectorEnv``, decoding off unless
``--decode``):

- ``N=1``: one dream, one intra-op thread (its best setting), fp32 dynamics;
- ``N=64 one batch``: ``--threads`` intra-op threads, bf16 dynamics;
- ``N=64 sharded``: ``shards="auto"`` (one shard per core, one thread each), bf16 dynamics.

Example:
    python benchmarks/bench_shards.py --reps 5 --seconds 5 --json shards.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import build_world_model


def rate(env, n: int, seconds: float) -> float:
    """Env steps per wall second over about ``seconds``."""
    actions = np.tile(np.array([18, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64), (n, 1))
    env.step(actions)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(actions)
        steps += 1
    return n * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world-model", default=None, help="world-model folder (default: random nano)")
    p.add_argument("--n", type=int, default=64, help="batched dreams (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="threads of the one-batch row")
    p.add_argument("--reps", type=int, default=5, help="timings per configuration")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per timing")
    p.add_argument("--decode", action="store_true", help="decode frames too")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    import lol_dreamer
    from lol_dreamer.envs.dream_vector import DreamVectorEnv

    with tempfile.TemporaryDirectory() as tmp:
        path = args.world_model or build_world_model(Path(tmp) / "wm", "nano", 128, 16, arch="cnn")
        wm = lol_dreamer.load_world_model(path)
    configs = {
        "N=1": (1, 1, "float32", 1),
        f"N={args.n} one batch, {args.threads} threads": (args.n, args.threads, "bfloat16", 1),
        f"N={args.n} sharded (auto), 1 thread each": (args.n, 1, "bfloat16", "auto"),
    }
    envs = {}
    for name, (n, _threads, dtype, shards) in configs.items():
        envs[name] = DreamVectorEnv(
            n, world_model=wm, decode=args.decode, dtype=dtype, shards=shards, torch_threads=None
        )
        envs[name].reset(seed=0)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for rep in range(args.reps):
        for name, (n, threads, _, _) in configs.items():
            torch.set_num_threads(threads)
            times[name].append(rate(envs[name], n, args.seconds))
            print(
                f"rep {rep + 1}/{args.reps} {name:36s} {times[name][-1]:8.1f} env steps/s",
                flush=True,
            )
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["N=1"]
    print(
        f"\n{'configuration':40s} {'median env steps/s':>20s} {'× N=1':>8s}   (decode {'on' if args.decode else 'off'})"
    )
    for name, v in med.items():
        print(f"{name:40s} {v:20.1f} {v / base:8.1f}")
    for env in envs.values():
        env.close()
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "decode": args.decode,
                    "timings": times,
                    "median": med,
                    "command": " ".join(sys.argv),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
