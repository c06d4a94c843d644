"""``lol-dreamer demo``: the dream next to the real LaneSim, same start, same actions, offline."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="dream and real LaneSim side by side from the same start (video + PSNR/position plot)",
        description=(
            "Reset LaneSim with --seed, let the scripted player play the world model's context, encode "
            "those frames as the dream's context, then step the dream and LaneSim with the same actions "
            "(the world model's agent acts on the dream when it has policy heads, else the scripted "
            "player). Writes DIR/demo.mp4 (dream left, LaneSim right; gif when mp4 cannot be written), "
            "DIR/demo.png (PSNR and player-position error over time), DIR/demo.json, and prints the "
            "dream's frames per second. Runs offline on the bundled default model."
        ),
    )
    a = p.add_argument
    a("--out", default="demo", help="output folder (default %(default)s)")
    a("--world-model", default=None, help="world-model folder (default: the bundled default model)")
    a(
        "--frames",
        type=int,
        default=160,
        help="frames after the context (default %(default)s = 8 s)",
    )
    a(
        "--seed",
        type=int,
        default=0,
        help="LaneSim, dream-noise and action seed (default %(default)s)",
    )
    a("--task", default=None, choices=("farm", "fight", "push"), help="task (default: the model's)")
    a("--scale", type=int, default=None, help="integer video upscaling (default: to about 256 px)")
    a("--device", default="cpu", help="torch device (default %(default)s)")
    a("--quiet", action="store_true", help="no progress bar")
    a("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=lazy("lol_dreamer.envs.demo:run"))
