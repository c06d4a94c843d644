"""Batch-1 ``gym.make("LoLDream-v0")`` with the frame decoded on a worker thread vs inline.

Alternates the two settings on one env (100 timed steps each, after 10 warm-up steps, ``--rounds``
rounds) and prints steps per wall and per CPU second.

Example:
    python benchmarks/bench_overlap.py --rounds 2
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="world model (default: the bundled one)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=100)
    args = p.parse_args(argv)

    import lol_dreamer  # noqa: F401  (registers the env)

    env = gym.make("LoLDream-v0", checkpoint=args.checkpoint)
    action = np.array([18, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64)
    best: dict[bool, float] = {}
    for _ in range(args.rounds):
        for overlap in (True, False):
            env.unwrapped.batch.overlap_decode = overlap
            env.reset(seed=0)
            for _ in range(10):
                env.step(action)
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                env.step(action)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            best[overlap] = max(best.get(overlap, 0.0), args.steps / wall)
            print(
                f"overlap={overlap!s:5s} {args.steps / wall:6.1f} steps per wall s "
                f"({args.steps / cpu:.1f} per CPU s)",
                flush=True,
            )
    print(f"best: overlap {best[True]:.1f}, inline {best[False]:.1f} steps per wall s")
    env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
