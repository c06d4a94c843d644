"""``lol-dreamer play``: play the dream, the real LaneSim, or both side by side (SPEC §8)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "play",
        help="play the world model's dream (or LaneSim) with keyboard and mouse",
        description=(
            "Open a pygame window on the dream, the real LaneSim, or both side by side. Arrow keys move "
            "(pairs = diagonals), Q W E R D F abilities, 1 item, B recall, right mouse held moves toward "
            "the cursor; Esc quit, P pause, N step, Enter reset, Tab human/agent, F1 FPS, F12 record."
        ),
    )
    p.add_argument(
        "--world-model", default=None, help="world-model folder (default: the bundled model)"
    )
    p.add_argument(
        "--mode",
        default="dream",
        choices=("dream", "real", "side"),
        help="what to show (default %(default)s)",
    )
    p.add_argument("--agent", default=None, help="run folder whose policy takes over on Tab")
    p.add_argument(
        "--scale", type=int, default=4, help="integer upscaling of each panel (default %(default)s)"
    )
    p.add_argument(
        "--fps", type=float, default=20.0, help="frame-rate cap, 0 = uncapped (default %(default)s)"
    )
    p.add_argument(
        "--task",
        default="farm",
        choices=("farm", "fight", "push"),
        help="task whose reward is shown (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="first reset seed (default %(default)s)")
    p.add_argument(
        "--device", default="cpu", help="torch device of the world model (default %(default)s)"
    )
    p.add_argument(
        "--steps-per-frame",
        type=int,
        default=None,
        help="K denoising steps per dream frame (default: the model's)",
    )
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="quit after this many frames (for scripted runs)",
    )
    p.add_argument(
        "--record-dir",
        default="recordings",
        help="where F12 recordings are written (default %(default)s)",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=lazy("lol_dreamer.envs.play:run"))
