"""Phase 1b job: train the dynamics model with shortcut forcing and write a complete world model.

``lol-dreamer train dynamics --data DIR --tokenizer RUN --out WM`` (SPEC §6):

1. checks that every episode of ``DIR`` carries latents made by ``RUN`` (``lol-dreamer tokenize``
   writes them; the command that fixes a mismatch is printed);
2. splits episodes into train / held-out (by episode, deterministic), copies the tokenizer into
   ``WM/tokenizer/`` and stores held-out start clips and clips with true frames, so ``WM`` alone is
   a world model (:func:`lol_dreamer.load_world_model`);
3. trains on the shared loop (resume, DDP under torchrun, EMA, held-out shortcut loss as
   ``eval/loss``, ``eval/flow``, ``eval/bootstrap``; ``eval/action_gain``, how much the
   held-out flow loss rises when each sequence gets another's actions; ``eval/next_frame_ratio``,
   the one-step prediction of the next latent from a clean history against copying the last
   one), with short and long sequences in turn.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lol_dreamer.actions import TASKS


def world_model_meta(res: int, fps: float, context: int, k: int = 4) -> dict[str, Any]:
    """The ``"world_model"`` section of a world model's ``config.json``."""
    return {
        "res": int(res),
        "fps": round(fps),
        "k": int(k),
        "context": int(context),
        "tasks": list(TASKS),
    }


def dataset_fps(dataset: Any, default: float = 20.0) -> float:
    """Frames per second recorded in the first episode's metadata."""
    if len(dataset) == 0:
        return default
    return float(dataset[0].meta.get("fps", default))


def write_assets(
    out: Path,
    tokenizer_run: str | Path,
    held_out: Any,
    context: int,
    n_starts: int,
    n_clips: int,
    clip_frames: int,
    seed: int,
) -> dict[str, Any]:
    """Copy the tokenizer and store held-out start clips and true-frame clips in ``out``.

    Returns:
        A record of what was stored (counts and shapes) for ``config.json``.
    """
    from lol_dreamer.world_model_export import (
        CLIPS_FILE,
        STARTS_FILE,
        collect_clips,
        collect_starts,
        copy_tokenizer,
        save_tensors,
    )

    copy_tokenizer(tokenizer_run, out)
    starts = collect_starts(held_out, context, n_starts, seed)
    save_tensors(out / STARTS_FILE, starts)
    clips = collect_clips(held_out, clip_frames, n_clips, seed)
    save_tensors(out / CLIPS_FILE, clips)
    return {
        "starts": list(starts["latents"].shape[:2]),
        "clips": list(clips["frames"].shape[:2]),
        "held_out_episodes": list(held_out.names),
    }


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lol-dreamer train dynamics`` (flags: :mod:`lol_dreamer.commands.train_dynamics`)."""
    import torch

    from lol_dreamer.checkpoint import load_run_config
    from lol_dreamer.data import SequenceSampler
    from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel, latent_rho, latent_stats
    from lol_dreamer.objectives.shortcut import ShortcutConfig, ShortcutObjective
    from lol_dreamer.training import train
    from lol_dreamer.training.config import TrainConfig
    from lol_dreamer.training.distributed import barrier, init_distributed
    from lol_dreamer.training.state import refuse_existing_run
    from lol_dreamer.world_model_training import (
        batch_lengths,
        combine_evals,
        held_out_eval,
        next_frame_eval,
        open_latent_split,
    )

    out = Path(args.out)
    refuse_existing_run(out, args.resume)
    split = open_latent_split(args.data, args.tokenizer, args.held_out, args.split_seed)
    tok_cfg, train_set, held = split.tokenizer, split.train, split.held

    overrides: dict[str, Any] = {"context": args.context} if args.context else {}
    if getattr(args, "time_every", None):
        overrides["time_every"] = args.time_every
    for switch in ("kalman_skip", "zero_init_out"):  # on/off flags; None keeps the preset's
        if getattr(args, switch, None):
            overrides[switch] = getattr(args, switch) == "on"
    if getattr(args, "latent_scale", None):
        overrides["latent_scale"] = args.latent_scale
    if args.resume and (out / "config.json").exists():
        dyn_cfg = DynamicsConfig.from_dict(load_run_config(out)["model"])
    else:
        dyn_cfg = DynamicsConfig.preset(args.preset, n_z=tok_cfg.n_z, d_z=tok_cfg.d_z, **overrides)
    short, long = batch_lengths(train_set.lengths, dyn_cfg.context, args.seq_len)
    cfg = TrainConfig.from_args(args)

    info = init_distributed(args.device)
    sampler = SequenceSampler(
        train_set, long, args.batch_size, seed=args.seed,
        fields=("latents", "actions", "labeled"), rank=info.rank, world_size=info.world_size,
    )  # fmt: skip
    objective = ShortcutObjective(
        ShortcutConfig(
            k_max=dyn_cfg.k_max,
            short_len=short,
            long_len=long,
            flow_frac=args.flow_frac,
            context_frac=getattr(args, "context_frac", 0.0),
        )
    )
    held_len = min(long, int(held.lengths.max()))
    held_sampler = SequenceSampler(
        held,
        held_len,
        args.batch_size,
        seed=args.seed + 9973,
        fields=("latents", "actions", "labeled"),
    )
    eval_batches = [held_sampler.sample(i) for i in range(max(1, args.eval_batches))]

    assets: dict[str, Any] = {}
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        complete = all(
            (out / f).exists()
            for f in ("tokenizer/model.safetensors", "starts.safetensors", "clips.safetensors")
        )
        if not (args.resume and complete):
            assets = write_assets(
                out,
                args.tokenizer,
                held,
                dyn_cfg.context,
                args.n_starts,
                args.n_clips,
                args.clip_frames,
                args.seed,
            )
    barrier()

    run_config = {
        "kind": "dynamics",
        "model": dyn_cfg.to_dict(),
        "objective": objective.cfg.to_dict(),
        "data": split.record(short, long),
        "tokenizer": {"path": split.ident["path"], "sha256": split.ident["sha256"]},
        "world_model": world_model_meta(tok_cfg.res, dataset_fps(split.dataset), dyn_cfg.context),
    }
    if assets:
        run_config["assets"] = assets
    elif (out / "config.json").exists():
        run_config["assets"] = load_run_config(out).get("assets", {})
    torch.manual_seed(args.seed)  # the initial weights depend on --seed only
    model = DynamicsModel(dyn_cfg)
    # The model trains on normalised latents (models/dynamics.py); --resume restores the same stats.
    train_latents = [ep.latents for ep in train_set]
    mean, std = latent_stats(train_latents)
    rho = latent_rho(train_latents, mean, std) if dyn_cfg.kalman_skip else None
    model.set_latent_stats(mean, std, rho)
    eval_fn = combine_evals(
        held_out_eval(objective, eval_batches, shuffled_actions=True),
        next_frame_eval(eval_batches),
    )
    result = train(
        model, objective, sampler, cfg, out,
        eval_fn=eval_fn, run_config=run_config, resume=args.resume,
    )  # fmt: skip
    if info.is_main and cfg.progress:
        print(
            f"World model: {out} ({model.num_params() / 1e6:.2f} M dynamics parameters, preset {args.preset}, "
            f"context {dyn_cfg.context}, step {result.step}) with its tokenizer copy and held-out start clips; "
            f"load it with lol_dreamer.load_world_model({str(out)!r}), watch it with "
            f"`lol-dreamer dream --world-model {out} --frames 64 --out dream.mp4`, measure it with "
            f"`lol-dreamer eval world-model --world-model {out} --data {args.data}`."
        )
    return 0
