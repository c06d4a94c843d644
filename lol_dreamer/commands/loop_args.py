"""The flags of the shared training loop, declared once for every ``lol-dreamer train`` command.

:func:`add_loop_args` adds them; :meth:`lol_dreamer.training.config.TrainConfig.from_args` turns the
parsed flags back into a :class:`~lol_dreamer.training.config.TrainConfig`.
"""

from __future__ import annotations

import argparse


def add_loop_args(
    p: argparse.ArgumentParser,
    *,
    steps: int,
    lr: float,
    save_every: int,
    batch_size: int | None = None,
    batch_help: str = "sequences per step",
    weight_decay: float = 0.01,
    ema: bool = True,
    eval_every: int | None = None,
    eval_help: str = "held-out loss every N steps and at the end",
    eval_batches: int = 4,
    split_seed_help: str = "train/held-out split seed, as in `train tokenizer`",
    precision_help: str = "autocast precision",
    quiet: bool = True,
) -> None:
    """Add the optimiser, schedule, evaluation, checkpoint and run flags to a training command.

    Args:
        p: the command's parser.
        steps: default of ``--steps``.
        lr: default of ``--lr`` (peak learning rate).
        save_every: default of ``--save-every``.
        batch_size: default of ``--batch-size``; None leaves the flag out (the command has its own).
        batch_help: what one item of ``--batch-size`` is, for its help.
        weight_decay: default of ``--weight-decay``.
        ema: add ``--ema`` / ``--ema-decay``.
        eval_every: default of ``--eval-every``; None leaves out the held-out evaluation flags
            (``--eval-every``, ``--eval-batches``, ``--held-out``, ``--split-seed``).
        eval_help: help of ``--eval-every`` (without the default).
        eval_batches: default of ``--eval-batches``.
        split_seed_help: help of ``--split-seed`` (without the default).
        precision_help: help of ``--precision`` (without the default).
        quiet: add ``--quiet``.
    """
    a = p.add_argument
    a("--steps", type=int, default=steps, help="optimiser steps (default %(default)s)")
    if batch_size is not None:
        a("--batch-size", type=int, default=batch_size, help=f"{batch_help} (default %(default)s)")
    a("--lr", type=float, default=lr, help="peak learning rate (default %(default)s)")
    a("--warmup", type=int, default=None, help="warmup steps (default min(1000, 5%% of --steps))")
    a(
        "--weight-decay",
        type=float,
        default=weight_decay,
        help="AdamW weight decay (default %(default)s)",
    )
    a("--grad-clip", type=float, default=1.0, help="gradient-norm clip (default %(default)s)")
    a(
        "--time-limit",
        type=float,
        default=None,
        metavar="MINUTES",
        help="wall-clock budget of this invocation: after a short calibration the step count shrinks "
        "so the schedule ends inside it, and training stops at it with a final evaluation and "
        "checkpoint (default: none, train --steps)",
    )
    if ema:
        a("--ema", action="store_true", help="keep an EMA of the weights and publish it")
        a("--ema-decay", type=float, default=0.999, help="EMA decay (default %(default)s)")
    if eval_every is not None:
        a("--eval-every", type=int, default=eval_every, help=f"{eval_help} (default %(default)s)")
        a(
            "--eval-batches",
            type=int,
            default=eval_batches,
            help="held-out batches per evaluation (default %(default)s)",
        )
    a(
        "--log-every",
        type=int,
        default=10,
        help="progress-bar refresh every N steps (default %(default)s)",
    )
    a(
        "--save-every",
        type=int,
        default=save_every,
        help="checkpoint every N steps (default %(default)s)",
    )
    if eval_every is not None:
        a(
            "--held-out",
            type=float,
            default=0.1,
            help="fraction of episodes held out (default %(default)s)",
        )
        a("--split-seed", type=int, default=0, help=f"{split_seed_help} (default %(default)s)")
    a("--resume", action="store_true", help="continue the run in --out from its state/")
    a("--seed", type=int, default=0, help="random seed (default %(default)s)")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N (default %(default)s)")
    a(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help=f"{precision_help} (default %(default)s)",
    )
    if quiet:
        a("--quiet", action="store_true", help="no progress bar or summary")
    a("--debug", action="store_true", help="show full tracebacks")
