"""``lol-dreamer tokenize``: store a trained tokenizer's latents beside a dataset's frames."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tokenize",
        help="encode every episode with a trained tokenizer (for `train dynamics`)",
        description=(
            "Encode every episode of --data with the tokenizer run's published (EMA when trained with "
            "--ema) weights and write float16 latents [T, n_z, d_z] beside the frames."
        ),
    )
    p.add_argument(
        "--tokenizer", required=True, help="tokenizer run folder (from `train tokenizer`)"
    )
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="episodes encoded side by side (default %(default)s)",
    )
    p.add_argument(
        "--only-missing",
        action="store_true",
        help="skip episodes already tokenized by this exact tokenizer",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=lazy("lol_dreamer.latents:run"))
