"""``lol-dreamer train tokenizer``: phase 1a, the video tokenizer (SPEC §5)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy
from lol_dreamer.commands.loop_args import add_loop_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tokenizer",
        help="train the video tokenizer (MSE + LPIPS, MAE) on a dataset",
        description=(
            "Train a tokenizer on random clips of the training episodes; held-out episodes score "
            "reconstructions while training. Writes a run folder: config.json, model.safetensors, "
            "metrics.jsonl, state/ (resume with --resume)."
        ),
    )
    p.add_argument("--data", required=True, help="dataset folder (from `collect` or `ingest`)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument(
        "--preset",
        default="nano",
        help="size: test, nano, tiny, small, medium, large (default %(default)s)",
    )
    p.add_argument(
        "--arch",
        default="transformer",
        choices=("transformer", "cnn"),
        help="tokenizer architecture (default %(default)s)",
    )
    p.add_argument("--seq-len", type=int, default=4, help="frames per clip (default %(default)s)")
    p.add_argument(
        "--mae-max-ratio",
        type=float,
        default=None,
        help="MAE patch dropout: the drop probability is drawn from U(0, R) per image; 0 turns MAE "
        "off (default: the preset's, 0.9; transformer only)",
    )
    p.add_argument(
        "--lpips-weight",
        type=float,
        default=0.2,
        help="weight of the LPIPS term; 0 = MSE only (default %(default)s)",
    )
    p.add_argument(
        "--lpips-weights",
        default=None,
        metavar="PATH",
        help="torchvision vgg16-*.pth file or folder (default: the torch hub cache)",
    )
    p.add_argument(
        "--lpips-max-images",
        type=int,
        default=8,
        help="LPIPS on at most N frames per step (default %(default)s)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the tokenizer")
    add_loop_args(
        p,
        steps=3000,
        batch_size=8,
        batch_help="clips per step",
        lr=5e-4,
        save_every=500,
        eval_every=250,
        eval_help="held-out reconstruction every N steps, 0 = at the end",
        eval_batches=2,
        split_seed_help="seed of the episode split",
        precision_help="autocast precision; auto = bf16 on CUDA",
        quiet=False,
    )
    p.set_defaults(func=lazy("lol_dreamer.training.tokenizer_job:run"))
