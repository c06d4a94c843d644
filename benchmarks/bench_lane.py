"""LaneSim speed: environment steps per second at 64/128/256 px, with and without rendering.

Single process, numpy only (no torch). "render" = ``env.step`` (game + frame); "no render" =
``env.advance`` (game logic, rewards and info, no frame). Actions: a fixed seeded stream of
biased-random actions (held movement, occasional key presses), resetting whenever an episode ends.

    python benchmarks/bench_lane.py                    # table
    python benchmarks/bench_lane.py --steps 3000 --json lane.json
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def _actions(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 9), dtype=np.int64)
    move = 18
    for i in range(n):
        if rng.random() < 0.1:
            move = int(rng.integers(19))
        out[i, 0] = move
        out[i, 1:] = rng.random(8) < 0.02
    return out


def bench_env(
    res: int = 128, render: bool = True, steps: int = 2000, task: str = "farm", clock: str = "wall"
) -> float:
    """Steps per second of one ``LaneEnv`` in this process (after a short warm-up).

    Args:
        res: frame side in pixels.
        render: True = ``env.step`` (with the frame), False = ``env.advance`` (game only).
        steps: timed steps.
        task: LaneSim task.
        clock: ``wall`` (``time.perf_counter``) or ``cpu`` (``time.process_time``: this process's
            CPU time, the fairer number on a busy shared machine).

    Returns:
        steps per second.
    """
    from lol_dreamer.envs.lane.env import LaneEnv

    env = LaneEnv(task=task, res=res, max_steps=1000)
    env.reset(seed=0)
    acts = _actions(steps + 200)
    fn = env.step if render else env.advance
    episode = 0

    def run(rows: np.ndarray) -> None:
        nonlocal episode
        for a in rows:
            out = fn(a)
            if out[-3] or out[-2]:
                episode += 1
                env.reset(seed=episode)

    timer = {"wall": time.perf_counter, "cpu": time.process_time}[clock]
    run(acts[:200])
    t0 = timer()
    run(acts[200:])
    return steps / (timer() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="timed steps per configuration")
    ap.add_argument("--res", type=int, nargs="+", default=[64, 128, 256], help="resolutions (px)")
    ap.add_argument(
        "--json", type=str, default=None, help="also write the results to this JSON file"
    )
    args = ap.parse_args()
    rows = []
    print(
        f"{'res (px)':>8} {'render':>7} {'wall steps/s':>13} {'cpu steps/s':>12} {'cpu us/step':>12}"
    )
    for res in args.res:
        for render in (True, False):
            wall = bench_env(res, render, args.steps, clock="wall")
            cpu = bench_env(res, render, args.steps, clock="cpu")
            rows.append(
                {
                    "res": res,
                    "render": render,
                    "wall_steps_per_s": wall,
                    "cpu_steps_per_s": cpu,
                    "cpu_us_per_step": 1e6 / cpu,
                }
            )
            print(
                f"{res:>8} {'yes' if render else 'no':>7} {wall:>13.0f} {cpu:>12.0f} {1e6 / cpu:>12.1f}"
            )
    if args.json:
        from lol_dreamer.io import atomic_write_json

        meta = {
            "steps": args.steps,
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
        atomic_write_json(args.json, {"benchmark": "lane", "meta": meta, "results": rows})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
