"""``lol-dreamer train dynamics``: phase 1b, the action-conditioned dynamics model (SPEC §6)."""

from __future__ import annotations

import argparse

from lol_dreamer.commands import lazy
from lol_dreamer.commands.loop_args import add_loop_args


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
    a(
        "--time-every",
        type=int,
        default=None,
        help="every N-th layer is a causal time layer (default: the preset's, 4 as in DreamerV4)",
    )
    a(
        "--kalman-skip",
        choices=("on", "off"),
        default=None,
        help="filtered estimate of the latents from all earlier frames as the preconditioning skip "
        "(DynamicsConfig.kalman_skip; default: the preset's)",
    )
    a(
        "--zero-init-out",
        choices=("on", "off"),
        default=None,
        help="start the latent output projection at zero, so a fresh model predicts exactly its "
        "skip term, e.g. the filtered latents (DynamicsConfig.zero_init_out; default: the preset's)",
    )
    a(
        "--latent-scale",
        type=float,
        default=None,
        help="multiply the standardised latents by this (DynamicsConfig.latent_scale): above 1 the "
        "diffusion and context noise are smaller next to what changes between frames (default: "
        "the preset's)",
    )
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
    a(
        "--flow-frac",
        type=float,
        default=None,
        help="probability of the finest step d_min (the flow term) per frame; default: step sizes "
        "uniform over {1, 1/2, ..., 1/64} as in DreamerV4",
    )
    a(
        "--context-frac",
        type=float,
        default=0.0,
        help="fraction of sequences whose frames before a random cut sit at the context level "
        "tau_ctx, as in generation (default %(default)s: pure diffusion forcing as in DreamerV4)",
    )
    a(
        "--compile",
        action="store_true",
        help="torch.compile the dynamics model (fewer, fused kernels; pays on a GPU, where small "
        "models are launch-bound; the first steps compile)",
    )
    add_loop_args(p, steps=20000, batch_size=16, lr=3e-4, save_every=1000, eval_every=500)
    p.set_defaults(func=lazy("lol_dreamer.train_dynamics:run"))
