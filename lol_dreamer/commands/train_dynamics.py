"""``lol-dreamer train dynamics``: phase 1b, the action-conditioned dynamics model (SPEC §6)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy


def add_loop_args(p: argparse.ArgumentParser, steps: int, batch_size: int, lr: float) -> None:
    """Flags shared by the world-model training commands (optimiser, schedule, logging, resume)."""
    a = p.add_argument
    a("--steps", type=int, default=steps, help="optimiser steps (default %(default)s)")
    a("--batch-size", type=int, default=batch_size, help="sequences per step (default %(default)s)")
    a("--lr", type=float, default=lr, help="peak learning rate (default %(default)s)")
    a("--warmup", type=int, default=None, help="warmup steps (default min(1000, 5%% of --steps))")
    a("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default %(default)s)")
    a("--grad-clip", type=float, default=1.0, help="gradient-norm clip (default %(default)s)")
    a("--ema", action="store_true", help="keep an EMA of the weights and publish it")
    a("--ema-decay", type=float, default=0.999, help="EMA decay (default %(default)s)")
    a(
        "--eval-every",
        type=int,
        default=500,
        help="held-out loss every N steps and at the end (default %(default)s)",
    )
    a(
        "--eval-batches",
        type=int,
        default=4,
        help="held-out batches per evaluation (default %(default)s)",
    )
    a(
        "--log-every",
        type=int,
        default=10,
        help="progress-bar refresh every N steps (default %(default)s)",
    )
    a("--save-every", type=int, default=1000, help="checkpoint every N steps (default %(default)s)")
    a(
        "--held-out",
        type=float,
        default=0.1,
        help="fraction of episodes held out (default %(default)s)",
    )
    a(
        "--split-seed",
        type=int,
        default=0,
        help="train/held-out split seed, as in `train tokenizer` (default %(default)s)",
    )
    a("--resume", action="store_true", help="continue the run in --out from its state/")
    a("--seed", type=int, default=0, help="random seed (default %(default)s)")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N (default %(default)s)")
    a(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="autocast precision (default %(default)s)",
    )
    a("--quiet", action="store_true", help="no progress bar or summary")
    a("--debug", action="store_true", help="show full tracebacks")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dynamics",
        help="train the dynamics transformer with shortcut forcing on tokenized episodes",
        description=(
            "Train the action-conditioned dynamics model on the latents written by "
            "`lol-dreamer tokenize`. The output folder is a complete world model: dynamics weights, "
            "a copy of the tokenizer and held-out start clips, so later commands need no --data. "
            "Multi-GPU: launch with `torchrun --nproc-per-node N -m lol_dreamer.cli train dynamics ...`."
        ),
    )
    a = p.add_argument
    a("--data", required=True, help="dataset folder (tokenized with --tokenizer)")
    a("--tokenizer", required=True, help="tokenizer run folder that made the latents")
    a("--out", required=True, help="world-model folder to write")
    a(
        "--preset",
        default="nano",
        help="dynamics size: test, nano, tiny, small, medium, large (default %(default)s)",
    )
    a("--context", type=int, default=None, help="context length in frames (default: the preset's)")
    a("--seq-len", type=int, default=None, help="long-batch length (default 2 × the context)")
    a(
        "--n-starts",
        type=int,
        default=256,
        help="held-out start clips stored in the world model (default %(default)s)",
    )
    a(
        "--n-clips",
        type=int,
        default=4,
        help="held-out clips with true frames stored (default %(default)s)",
    )
    a("--clip-frames", type=int, default=160, help="frames per stored clip (default %(default)s)")
    add_loop_args(p, steps=20000, batch_size=16, lr=3e-4)
    p.set_defaults(func=lazy("lol_dreamer.train_dynamics:run"))
