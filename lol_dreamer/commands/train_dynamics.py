"""``lol-dreamer train dynamics``: phase 1b, the action-conditioned dynamics model (SPEC §6)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def add_loop_args(p: argparse.ArgumentParser, steps: int, batch_size: int, lr: float) -> None:
    """Flags shared by the world-model training commands (optimiser, schedule, logging, resume)."""
    p.add_argument("--steps", type=int, default=steps, help="optimiser steps (default %(default)s)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="sequences per step (default %(default)s)",
    )
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (default %(default)s)")
    p.add_argument(
        "--warmup", type=int, default=None, help="warmup steps (default min(1000, 5%% of --steps))"
    )
    p.add_argument(
        "--weight-decay", type=float, default=0.01, help="AdamW weight decay (default %(default)s)"
    )
    p.add_argument(
        "--grad-clip", type=float, default=1.0, help="gradient-norm clip (default %(default)s)"
    )
    p.add_argument("--ema", action="store_true", help="keep an EMA of the weights and publish it")
    p.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay (default %(default)s)")
    p.add_argument(
        "--eval-every",
        type=int,
        default=500,
        help="held-out loss every N steps, 0 = never (default %(default)s)",
    )
    p.add_argument(
        "--eval-batches",
        type=int,
        default=4,
        help="held-out batches per evaluation (default %(default)s)",
    )
    p.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="progress-bar refresh every N steps (default %(default)s)",
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=1000,
        help="checkpoint every N steps (default %(default)s)",
    )
    p.add_argument(
        "--held-out",
        type=float,
        default=0.1,
        help="fraction of episodes held out (default %(default)s)",
    )
    p.add_argument(
        "--n-starts",
        type=int,
        default=256,
        help="held-out start clips stored in the world model (default %(default)s)",
    )
    p.add_argument(
        "--n-clips",
        type=int,
        default=4,
        help="held-out clips with true frames stored (default %(default)s)",
    )
    p.add_argument(
        "--clip-frames",
        type=int,
        default=160,
        help="length of each stored clip (default %(default)s)",
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
        help="autocast precision (default %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dynamics",
        help="train the dynamics transformer with shortcut forcing on tokenized episodes",
        description=(
            "Train the action-conditioned dynamics model on the latents written by "
            "`lol-dreamer tokenize`. The output folder is a complete world model: dynamics weights, "
            "a copy of the tokenizer and held-out start clips, so later commands need no --data."
        ),
    )
    p.add_argument("--data", required=True, help="dataset folder (tokenized with --tokenizer)")
    p.add_argument("--tokenizer", required=True, help="tokenizer run folder that made the latents")
    p.add_argument("--out", required=True, help="world-model folder to write")
    p.add_argument(
        "--preset",
        default="nano",
        help="dynamics size: test, nano, tiny, small, medium, large (default %(default)s)",
    )
    p.add_argument(
        "--context", type=int, default=None, help="context length in frames (default: the preset's)"
    )
    p.add_argument(
        "--seq-len", type=int, default=None, help="long-batch length (default 2 × --context)"
    )
    add_loop_args(p, steps=20000, batch_size=16, lr=3e-4)
    p.set_defaults(func=lazy("lol_dreamer.train_dynamics:run"))
