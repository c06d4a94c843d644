"""``lol-dreamer ingest VIDEO --out DIR [--actions CSV] [--res 128] [--task farm]``."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="turn a recorded video (+ optional per-frame actions CSV) into a dataset episode",
        description=(
            "Decode an mp4/mkv with PyAV, centre-crop and resize frames to a square resolution and write "
            "one episode into the dataset folder (appending). Without --actions the episode is unlabeled. "
            "CSV columns: frame,move[,Q,W,E,R,D,F,item,B][,reward_farm,reward_fight,reward_push][,terminated] "
            "(header required; see docs/data_format.md)."
        ),
    )
    p.add_argument("video", help="video file (mp4, mkv, anything FFmpeg decodes)")
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument(
        "--actions",
        default=None,
        metavar="CSV",
        help="per-frame actions/rewards CSV (frames without a row are unlabeled)",
    )
    p.add_argument(
        "--res", type=int, default=128, help="square output resolution in pixels (default 128)"
    )
    p.add_argument(
        "--task",
        default="farm",
        choices=("farm", "fight", "push"),
        help="task stored with the episode",
    )
    p.add_argument("--max-frames", type=int, default=None, help="keep only the first N frames")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=lazy("lol_dreamer.data.ingest:run"))
