"""``lol-dreamer eval world-model``: SPEC §9 open-loop fidelity of a world model."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "world-model",
        help="open-loop PSNR/SSIM, champion position error, coherent horizon, action following",
        description=(
            "Dream from fixed contexts of held-out episodes with the true future actions and with "
            "those actions shuffled; report PSNR/SSIM against a copy-last-frame floor, the champion's "
            "position error and coherent horizon, action following and the reward head's error, as a "
            "table, a JSON file and a PNG plot."
        ),
    )
    a = p.add_argument
    a("--world-model", required=True, help="world-model folder")
    a("--data", required=True, help="dataset folder with latents from the world model's tokenizer")
    a("--episodes", type=int, default=8, help="held-out episodes to use (default %(default)s)")
    a("--contexts", type=int, default=4, help="fixed contexts per episode (default %(default)s)")
    a(
        "--k",
        type=int,
        default=None,
        help="denoising steps per frame (default: the world model's, 4)",
    )
    a("--horizons", default="1,4,16,64", help="comma-separated horizons (default %(default)s)")
    a("--seed", type=int, default=0, help="noise and shuffle seed (default %(default)s)")
    a(
        "--batch-size",
        type=int,
        default=32,
        help="rollouts dreamed side by side (default %(default)s)",
    )
    a(
        "--out",
        default=None,
        help="JSON report path (default WM/eval_world_model.json; the PNG goes beside it)",
    )
    a("--device", default="auto", help="auto, cpu, cuda (default %(default)s)")
    a("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=lazy("lol_dreamer.evaluation.world_model_eval:run"))
