"""``lol-dreamer collect --out DIR --episodes N [--workers W] [--res 128] [--task mixed] ...``."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "collect",
        help="play LaneSim with the scripted player and write episodes into a dataset folder",
        description=(
            "Run LaneSim with the scripted player in parallel worker processes and write each episode "
            "atomically (frames, actions, per-task rewards, terminal flags, true game state). Collecting "
            "into an existing dataset appends; episode k's seeds derive from (--seed, k), so runs are "
            "reproducible and appending continues the same stream."
        ),
    )
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--episodes", type=int, required=True, help="number of episodes to add")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--res", type=int, default=128, help="frame side in pixels (default 128)")
    p.add_argument(
        "--task",
        default="mixed",
        choices=("farm", "fight", "push", "mixed"),
        help="task of every episode; mixed = farm, fight, push round-robin by episode number (default)",
    )
    p.add_argument(
        "--skill", type=float, default=0.8, help="scripted player skill in [0, 1] (default 0.8)"
    )
    p.add_argument(
        "--skill-jitter",
        type=float,
        default=0.1,
        help="per-episode skill varies uniformly by ± this (default 0.1)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=1000,
        help="episode cap in steps (default 1000 = 50 s at 20 FPS)",
    )
    p.add_argument("--seed", type=int, default=0, help="collection seed (default 0)")
    p.add_argument(
        "--wander",
        type=float,
        default=0.0,
        help="per-frame probability that the player starts 4-20 frames of held random movement, "
        "decorrelating movement from the game state for world-model training (default 0 = none)",
    )
    p.add_argument(
        "--start-method",
        default="spawn",
        choices=("spawn", "fork", "forkserver"),
        help="multiprocessing start method",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=lazy("lol_dreamer.envs.collect:run"))
