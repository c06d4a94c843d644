"""Collector throughput: frames/s written to disk by ``lol-dreamer collect`` with W workers.

Also measures the in-process loop without disk writes (LaneSim step + render + scripted player),
so the cost of storage and of worker start-up can be read off the difference.

    python benchmarks/bench_collect.py --res 128 --workers 1 2 --episodes 4 --max-steps 200 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def bench_loop(res: int, steps: int, task: str = "farm") -> float:
    """Frames/s of env.step + render + scripted player in this process (no storage)."""
    from lol_dreamer.envs.lane.env import LaneEnv
    from lol_dreamer.envs.lane.scripted import ScriptedPlayer

    env = LaneEnv(task=task, res=res, max_steps=10**9)
    bot = ScriptedPlayer(task, skill=0.8, seed=0)
    env.reset(seed=0)
    for _ in range(20):  # warm-up
        env.step(bot.act(env))
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(bot.act(env))
        if term or trunc:
            env.reset(seed=1)
    return steps / (time.perf_counter() - t0)


def bench_collect(res: int, workers: int, episodes: int, max_steps: int, start_method: str) -> dict:
    from lol_dreamer.envs.collect import collect

    with tempfile.TemporaryDirectory() as d:
        s = collect(
            Path(d) / "ds",
            episodes,
            workers=workers,
            res=res,
            task="mixed",
            max_steps=max_steps,
            seed=0,
            progress=False,
            start_method=start_method,
        )
        return {
            "workers": workers,
            "episodes": s.episodes,
            "frames": s.frames,
            "seconds": s.seconds,
            "frames_per_s": s.frames / s.seconds,
            "mib_per_frame": s.disk_bytes / 2**20 / max(s.frames, 1),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, default=128)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--loop-steps", type=int, default=500)
    p.add_argument("--start-method", default="spawn")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()

    loop_fps = bench_loop(args.res, args.loop_steps)
    rows = [
        bench_collect(args.res, w, args.episodes, args.max_steps, args.start_method)
        for w in args.workers
    ]
    print(
        f"LaneSim at {args.res} px, scripted player, in-process loop (no storage): {loop_fps:,.0f} frames/s"
    )
    print(
        f"{'workers':>7} {'episodes':>8} {'frames':>7} {'wall s':>7} {'frames/s':>9} {'KiB/frame':>9}"
    )
    for r in rows:
        print(
            f"{r['workers']:>7} {r['episodes']:>8} {r['frames']:>7} {r['seconds']:>7.1f} "
            f"{r['frames_per_s']:>9.0f} {r['mib_per_frame'] * 1024:>9.1f}"
        )
    print("wall time includes worker start-up (spawn) and atomic writes with fsync")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"res": args.res, "loop_frames_per_s": loop_fps, "collect": rows}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
