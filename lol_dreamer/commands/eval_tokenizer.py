"""``lol-dreamer eval tokenizer``: held-out PSNR / SSIM and linear-probe R² of HP, gold and level (SPEC §9)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tokenizer",
        help="score a tokenizer on held-out episodes (PSNR, SSIM, probe R²)",
        description=(
            "Reconstruct held-out episodes (the split the tokenizer was trained with) and report PSNR "
            "and SSIM, fit ridge probes from latents to the player's HP, gold and level on training "
            "episodes and report their held-out R²; writes tokenizer_eval.json and tokenizer_recon.png."
        ),
    )
    p.add_argument(
        "--tokenizer", required=True, help="tokenizer run folder (from `train tokenizer`)"
    )
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument(
        "--out", default=None, help="folder for the JSON and PNG (default TOKENIZER/eval)"
    )
    p.add_argument(
        "--held-out",
        type=float,
        default=None,
        help="held-out fraction (default: the training split)",
    )
    p.add_argument(
        "--split-seed", type=int, default=None, help="split seed (default: the training split)"
    )
    p.add_argument(
        "--max-episodes",
        type=int,
        default=32,
        help="episodes per side at most (default %(default)s)",
    )
    p.add_argument(
        "--max-frames",
        type=int,
        default=256,
        help="frames per episode at most, from its start; 0 = whole episodes (default %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="episodes streamed side by side (default %(default)s)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=lazy("lol_dreamer.evaluation.tokenizer_eval:run"))
