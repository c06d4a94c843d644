"""``lol-dreamer train imagine``: phase 3, PMPO in imagination on a frozen world model (SPEC §7)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy
from lol_dreamer.commands.loop_args import add_loop_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "imagine",
        help="phase 3: train the policy and a value head in imagination (PMPO, frozen prior)",
        description=(
            "Freeze a phase-2 agent world model's transformer and reward/continue heads, imagine one "
            "rollout of --horizon steps per dataset context through the batched dream env and a "
            "TorchRL collector, and train the policy head (initialised from phase 2) and a new value "
            "head with PMPO, TD(λ) returns and a reverse KL to the frozen phase-2 policy. The output "
            "folder is a complete agent world model (config kind 'imagine', parent = --agent); "
            "it also holds imagined_vs_real.png, the imagined return per step beside the live "
            "policy's return in the real game (--real-eval-every)."
        ),
    )
    a = p.add_argument
    a("--agent", required=True, help="phase-2 agent folder from `train agent`")
    a(
        "--data",
        default=None,
        help="dataset tokenized with the agent's tokenizer (default: its stored start clips)",
    )
    a("--out", required=True, help="phase-3 run folder to write")
    a("--horizon", type=int, default=32, help="imagined steps per rollout H (default %(default)s)")
    a(
        "--batch",
        type=int,
        default=16,
        help="rollouts (dataset contexts) per step (default %(default)s)",
    )
    a(
        "--context",
        type=int,
        default=None,
        help="context frames per rollout (default: the start clips' length)",
    )
    a("--task", default=None, help="farm, fight or push (default: the agent's task)")
    a(
        "--mtp-distance",
        type=int,
        default=None,
        help="policy output layer that acts (default: the agent's)",
    )
    a(
        "--alpha",
        type=float,
        default=0.5,
        help="PMPO weight of positive-advantage states (default %(default)s)",
    )
    a(
        "--beta",
        type=float,
        default=0.3,
        help="weight of the KL to the behavioural prior (default %(default)s)",
    )
    a("--gamma", type=float, default=0.997, help="discount (default %(default)s)")
    a("--lmbda", type=float, default=0.95, help="TD(λ) λ (default %(default)s)")
    a(
        "--k",
        type=int,
        default=None,
        help="denoising steps per imagined frame (default: the world model's)",
    )
    a(
        "--real-eval-every",
        type=int,
        default=None,
        help="every N optimiser steps (and before the first and after the last) the live policy "
        "plays LoLLane-v0; logs real/return, real/return_ci95 and real/episodes beside "
        "imagined_return (default: steps // 4, or never when the world model's frames are "
        "under LaneSim's 32 px; 0 = never)",
    )
    a(
        "--real-eval-episodes",
        type=int,
        default=2,
        help="real episodes per evaluation, env seeds 0, 1000, 2000, … at every evaluation "
        "(default %(default)s)",
    )
    a(
        "--real-eval-max-steps",
        type=int,
        default=300,
        help="steps per real episode before truncation (default %(default)s)",
    )
    add_loop_args(p, steps=1000, lr=1e-4, save_every=100, weight_decay=0.0, ema=False)
    p.set_defaults(func=lazy("lol_dreamer.agents.imagine:run"))
