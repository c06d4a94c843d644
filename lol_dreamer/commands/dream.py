"""``lol-dreamer dream``: film a world model's open-loop dream beside the ground truth."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dream",
        help="dream from a held-out clip with its true actions; write dream | truth as a video",
        description=(
            "Start from a held-out clip stored in the world model, roll the dream with the clip's own "
            "actions and write the dream (left) beside the ground truth (right) as mp4 (or gif)."
        ),
    )
    a = p.add_argument
    a(
        "--world-model",
        required=True,
        help="world-model folder (from `train dynamics` or `train agent`)",
    )
    a("--frames", type=int, default=64, help="frames to dream (default %(default)s)")
    a("--out", required=True, help="output video, .mp4 (or .mkv, .mov) or .gif")
    a(
        "--k",
        type=int,
        default=None,
        help="denoising steps per frame (default: the world model's, 4)",
    )
    a(
        "--clip",
        type=int,
        default=None,
        help="stored clip to start from (default: picked by --seed)",
    )
    a("--seed", type=int, default=0, help="noise seed (default %(default)s)")
    a("--scale", type=int, default=None, help="integer upscale (default: to about 256 px)")
    a("--device", default="auto", help="auto, cpu, cuda (default %(default)s)")
    a("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=lazy("lol_dreamer.dream_video:run"))
