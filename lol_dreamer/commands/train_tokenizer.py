"""``lol-dreamer train tokenizer``: phase 1a, the video tokenizer (SPEC §5)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


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
    p.add_argument("--steps", type=int, default=3000, help="optimiser steps (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per step (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=4, help="frames per clip (default %(default)s)")
    p.add_argument(
        "--lr", type=float, default=5e-4, help="peak learning rate (default %(default)s)"
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="warmup steps (default min(1000, 5%% of --steps))"
    )
    p.add_argument(
        "--weight-decay", type=float, default=0.01, help="AdamW weight decay (default %(default)s)"
    )
    p.add_argument(
        "--grad-clip", type=float, default=1.0, help="gradient-norm clip (default %(default)s)"
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
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights and publish it")
    p.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay (default %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the tokenizer")
    p.add_argument(
        "--eval-every",
        type=int,
        default=250,
        help="held-out reconstruction every N steps, 0 = at the end (default %(default)s)",
    )
    p.add_argument(
        "--eval-batches",
        type=int,
        default=2,
        help="held-out batches per evaluation (default %(default)s)",
    )
    p.add_argument(
        "--save-every", type=int, default=500, help="checkpoint every N steps (default %(default)s)"
    )
    p.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="progress-bar refresh every N steps (default %(default)s)",
    )
    p.add_argument(
        "--held-out",
        type=float,
        default=0.1,
        help="fraction of episodes held out (default %(default)s)",
    )
    p.add_argument(
        "--split-seed", type=int, default=0, help="seed of the episode split (default %(default)s)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its state/"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="autocast precision; auto = bf16 on CUDA (default %(default)s)",
    )
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=lazy("lol_dreamer.training.tokenizer_job:run"))
