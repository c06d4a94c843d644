"""``lol-dreamer train agent``: phase 2, agent tokens + policy/reward/continue heads (SPEC §7)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy
from lol_dreamer.commands.loop_args import add_loop_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agent",
        help="phase 2: behaviour cloning + reward modelling on a trained world model",
        description=(
            "Add task-conditioned agent tokens to a world model's dynamics transformer and train "
            "policy, reward and continue heads with multi-token prediction on the task-relevant half "
            "of each batch, keeping the video loss on the uniform half. The output folder is a "
            "complete world model with heads (config kind 'agent', parent = --world-model)."
        ),
    )
    p.add_argument("--world-model", required=True, help="world-model folder from `train dynamics`")
    p.add_argument(
        "--data", required=True, help="dataset folder tokenized with the world model's tokenizer"
    )
    p.add_argument("--out", required=True, help="agent world-model folder to write")
    p.add_argument("--task", default="farm", help="farm, fight or push (default %(default)s)")
    p.add_argument(
        "--mtp", type=int, default=8, help="multi-token prediction length L (default %(default)s)"
    )
    p.add_argument(
        "--heads-preset",
        default=None,
        help="heads size preset (default: one hidden layer as wide as the model)",
    )
    p.add_argument(
        "--agent-tokens", type=int, default=1, help="agent tokens per frame (default %(default)s)"
    )
    p.add_argument(
        "--relevant-fraction",
        type=float,
        default=0.5,
        help="task-relevant share of each batch (default %(default)s)",
    )
    p.add_argument(
        "--seq-len", type=int, default=None, help="long-batch length (default 2 × the context)"
    )
    p.add_argument(
        "--video-weight",
        type=float,
        default=1.0,
        help="weight of the shortcut loss (default %(default)s)",
    )
    p.add_argument(
        "--bc-weight",
        type=float,
        default=1.0,
        help="weight of behaviour cloning (default %(default)s)",
    )
    p.add_argument(
        "--reward-weight",
        type=float,
        default=1.0,
        help="weight of the reward loss (default %(default)s)",
    )
    p.add_argument(
        "--continue-weight",
        type=float,
        default=1.0,
        help="weight of the continue loss (default %(default)s)",
    )
    p.add_argument(
        "--trunk-lr-scale",
        type=float,
        default=1.0,
        help="learning-rate multiplier for the pre-trained dynamics transformer (the new agent "
        "tokens, task embedding and heads always get the full rate); 0 freezes it, so the dream "
        "stays exactly the world model's (default %(default)s: fine-tune everything)",
    )
    add_loop_args(p, steps=5000, batch_size=16, lr=1e-4, save_every=1000, eval_every=500)
    p.set_defaults(func=lazy("lol_dreamer.train_agent:run"))
