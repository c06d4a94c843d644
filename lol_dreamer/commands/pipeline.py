"""``lol-dreamer pipeline --out RUN``: collect → tokenizer → tokenize → dynamics → phase 2 → phase 3 → evaluation."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy
from lol_dreamer.pipeline_config import FULL, QUICK


def _d(key: str) -> str:
    """`` (default X; Y with --quick)`` for a setting of the two default tables."""
    return f" (default {FULL[key]}; {QUICK[key]} with --quick)"


STAGES = (
    "collect, tokenizer, tokenize, dynamics, bc, pmpo, eval-tokenizer, eval-world-model, eval-agent"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pipeline",
        help="run every phase (collect … evaluate) into one folder, resumable",
        description=(
            "Run every phase into subfolders of --out: RUN/data (LaneSim episodes + latents), "
            "RUN/tokenizer, RUN/world_model, RUN/bc (phase 2), RUN/pmpo (phase 3) and RUN/eval "
            "(reports). A finished stage is skipped on the next run (RUN/stages/<stage>.json records "
            "its arguments; changed arguments stop with the differences); an interrupted stage resumes "
            "from its checkpoint. RUN/pipeline.json records settings, timings and metrics. "
            f"Stages: {STAGES}. Flags left unset take the nano recipe, or the test recipe with --quick."
        ),
    )
    a = p.add_argument
    a("--out", required=True, help="pipeline folder RUN")
    a(
        "--data",
        default=None,
        help="start from this dataset (e.g. ingested recordings) instead of collecting; latents are written into it",
    )
    a(
        "--tokenizer",
        default=None,
        help="start from this trained tokenizer run instead of training one",
    )
    a(
        "--world-model",
        default=None,
        help="start from this phase-1b run (`train dynamics`) instead of training the dynamics; "
        "needs --tokenizer (the one it was trained on) and --data tokenized with it",
    )
    a(
        "--quick",
        action="store_true",
        help="test presets and tiny step counts: minutes on 2 CPU cores",
    )
    a(
        "--task",
        default="farm",
        choices=("farm", "fight", "push"),
        help="the agent's task (default %(default)s)",
    )
    a(
        "--preset",
        default=None,
        help="size preset of every model: test, nano, tiny, …" + _d("preset"),
    )
    a("--res", type=int, default=None, help="LaneSim frame side in px" + _d("res"))
    a("--episodes", type=int, default=None, help="LaneSim episodes to collect" + _d("episodes"))
    a("--max-steps", type=int, default=None, help="steps per collected episode" + _d("max_steps"))
    a(
        "--collect-task",
        default=None,
        choices=("farm", "fight", "push", "mixed"),
        help="task of the collected episodes (default mixed; --task with --quick)",
    )
    a("--workers", type=int, default=1, help="collector processes (default %(default)s)")
    for what in ("tokenizer", "dynamics", "agent", "imagine"):
        a(
            f"--steps-{what}",
            type=int,
            default=None,
            help=f"optimiser steps of the {what} trainer{_d('steps_' + what)}",
        )
    for what in ("tokenizer", "dynamics", "agent", "imagine"):
        own = "the trainer's own"
        recipe = FULL.get("lr_" + what)
        default = own if recipe is None else f"{recipe}; {own} with --quick"
        a(
            f"--lr-{what}",
            type=float,
            default=None,
            help=f"peak learning rate of the {what} trainer (default {default})",
        )
    a(
        "--arch-tokenizer",
        default=None,
        choices=("transformer", "cnn"),
        help="tokenizer architecture" + _d("arch_tokenizer"),
    )
    a(
        "--flow-frac",
        type=float,
        default=None,
        help="probability of the flow term per frame in the dynamics trainer" + _d("flow_frac"),
    )
    a(
        "--ema-dynamics",
        type=float,
        default=None,
        help="EMA decay of the dynamics weights, 0 = none" + _d("ema_dynamics"),
    )
    a(
        "--video-weight",
        type=float,
        default=None,
        help="weight of the video (shortcut) term in phase 2" + _d("video_weight"),
    )
    a(
        "--trunk-lr-scale",
        type=float,
        default=None,
        help="phase-2 learning-rate multiplier of the pre-trained transformer; 0 freezes it so the "
        "dream stays the phase-1b model's" + _d("trunk_lr_scale"),
    )
    a(
        "--precision",
        default=None,
        choices=("auto", "fp32", "bf16"),
        help="autocast precision of every trainer (default: the trainers' own, auto); bf16 is "
        "~1.8x faster per step on CPUs with native bf16",
    )
    for what in ("tokenizer", "dynamics", "agent", "imagine"):
        a(
            f"--batch-{what}",
            type=int,
            default=None,
            help=f"batch size of the {what} trainer{_d('batch_' + what)}",
        )
    a(
        "--horizon",
        type=int,
        default=None,
        help="imagined steps per rollout in phase 3" + _d("horizon"),
    )
    a(
        "--lpips-weight",
        type=float,
        default=None,
        help="tokenizer LPIPS weight" + _d("lpips_weight") + "; 0 = MSE only",
    )
    a(
        "--lpips-weights",
        default=None,
        metavar="PATH",
        help="torchvision vgg16-*.pth for LPIPS (default: the torch hub cache)",
    )
    a(
        "--save-every",
        type=int,
        default=None,
        help="checkpoint interval of every trainer" + _d("save_every"),
    )
    a(
        "--eval-seeds",
        type=int,
        default=None,
        help="LaneSim seeds of the agent evaluation" + _d("eval_seeds"),
    )
    a("--eval-episodes", type=int, default=None, help="episodes per seed" + _d("eval_episodes"))
    a(
        "--eval-max-steps",
        type=int,
        default=None,
        help="steps per evaluation episode" + _d("eval_max_steps"),
    )
    a(
        "--wm-eval-episodes",
        type=int,
        default=None,
        help="held-out episodes of the world-model evaluation" + _d("wm_eval_episodes"),
    )
    a(
        "--seed",
        type=int,
        default=0,
        help="seed of collection and every trainer (default %(default)s)",
    )
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N (default %(default)s)")
    a(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: one per core); 1 is often faster on a CPU shared with other jobs",
    )
    a("--stages", default=None, help=f"run only these comma-separated stages ({STAGES})")
    a("--until", default=None, metavar="STAGE", help="run the stages up to and including STAGE")
    a(
        "--redo",
        default=None,
        metavar="STAGES",
        help="run these stages (and those after them) again although done; trainers continue from their checkpoints",
    )
    a("--export-default", nargs="?", const="", default=None, metavar="DIR",
      help="afterwards, export RUN/pmpo as a bundled default model (tokenizer, dynamics, heads, start "
           "clips, MODEL_CARD.md; at most 25 MB) into DIR (default: the package's lol_dreamer/assets/default)")  # fmt: skip
    a("--quiet", action="store_true", help="print only errors")
    a("--debug", action="store_true", help="show full tracebacks")
    p.set_defaults(func=lazy("lol_dreamer.pipeline:run"))
