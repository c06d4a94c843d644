"""Phase 2 job: agent tokens and heads on a trained world model (SPEC §7).

``lol-dreamer train agent --world-model WM --data DIR --out BC --task farm``:

1. builds the dynamics transformer of ``WM`` with agent tokens (fed by a task embedding; nothing
   attends to them, so the video prediction is unchanged) and loads ``WM``'s dynamics weights;
2. adds policy / reward / continue heads with multi-token prediction (``--mtp`` L) on the agent
   tokens;
3. trains everything on the shared loop with :class:`~lol_dreamer.objectives.phase2.Phase2Objective`
   on 50% task-relevant / 50% uniform batches: behaviour cloning, reward and continue on the
   relevant rows, the shortcut (video) loss on the uniform rows, latents kept noisy;
4. writes ``BC`` as a complete world model (tokenizer copy, start clips, clips, the dynamics with
   agent tokens and the heads in ``model.safetensors``) with ``config.json`` kind ``"agent"``,
   ``parent`` = ``WM``, the task, the MTP length and the acting distance (n = 0).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lol_dreamer.actions import TASK_INDEX, TASKS


class HalfRelevant:
    """Held-out batches for phase 2 when the held-out episodes have no task-relevant window.

    Wraps a sampler and flags the first half of every batch as relevant, so the head losses are
    still measured (on ordinary held-out windows).
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def sample(self, step: int) -> dict[str, torch.Tensor]:
        batch = self.sampler.sample(step)
        b = batch["latents"].shape[0]
        batch["relevant"] = torch.arange(b) < max(1, b // 2)
        return batch


def heads_config(name: str | None, dim: int, mtp: int) -> Any:
    """Heads sized by preset ``name``, or one hidden layer as wide as the transformer when None."""
    from lol_dreamer.models.heads import HeadsConfig

    cfg = (
        HeadsConfig.preset(name, dim=dim)
        if name
        else HeadsConfig(dim=dim, hidden=dim, layers=1 if dim <= 128 else 2)
    )
    cfg.mtp = int(mtp)
    return cfg


def parent_dynamics(wm: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """The dynamics config and weights of a world model (a ``dynamics`` or an ``agent`` run).

    From an ``agent`` run only the transformer is taken: its agent tokens, task embedding and heads
    are left out, so the new phase-2 run starts them afresh.
    """
    from lol_dreamer.checkpoint import load_run_config, load_state_dict_file
    from lol_dreamer.models.dynamics import DynamicsConfig

    cfg = load_run_config(wm)
    state = load_state_dict_file(wm / "model.safetensors")
    if cfg["kind"] == "dynamics":
        return DynamicsConfig.from_dict(cfg["model"]), state
    if cfg["kind"] == "agent":
        dyn = DynamicsConfig.from_dict(cfg["model"]["dynamics"])
        d = dyn.to_dict()
        d["n_agent"] = 0
        sub = {k[len("dynamics.") :]: v for k, v in state.items() if k.startswith("dynamics.")}
        sub = {k: v for k, v in sub.items() if not k.startswith(("agent_tokens", "task_emb"))}
        return DynamicsConfig.from_dict(d), sub
    raise ValueError(
        f"{wm} is a {cfg['kind']!r} run; --world-model must be a folder from `lol-dreamer train dynamics`"
    )


def trainable_groups(model: nn.Module, fresh: list[str], trunk_lr_scale: float) -> list[dict]:
    """Phase-2 parameter groups: new parts at the full rate, the pre-trained transformer scaled.

    Args:
        model: an :class:`~lol_dreamer.models.agent_model.AgentWorldModel`.
        fresh: names (inside ``model.dynamics``) of the transformer parameters the world model did
            not have (agent tokens, task embedding).
        trunk_lr_scale: multiplier for the loaded transformer weights; 0 leaves them out (frozen).
    Returns:
        Groups for the trainer's ``params``.
    """
    if trunk_lr_scale < 0:
        raise ValueError(f"--trunk-lr-scale must be >= 0, got {trunk_lr_scale}")
    new = {f"dynamics.{k}" for k in fresh}
    trunk, other = [], []
    for name, p in model.named_parameters():
        (trunk if name.startswith("dynamics.") and name not in new else other).append(p)
    groups = [{"params": other, "lr_scale": 1.0}]
    if trunk_lr_scale > 0:
        groups.append({"params": trunk, "lr_scale": trunk_lr_scale})
    return groups


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lol-dreamer train agent`` (flags: :mod:`lol_dreamer.commands.train_agent`)."""
    from lol_dreamer.checkpoint import load_run_config
    from lol_dreamer.data import MixtureSampler, SequenceSampler
    from lol_dreamer.models.agent_model import (
        AgentWorldModel,
        load_dynamics_into,
        with_agent_tokens,
    )
    from lol_dreamer.objectives.phase2 import Phase2Config, Phase2Objective
    from lol_dreamer.objectives.shortcut import ShortcutConfig
    from lol_dreamer.training import train
    from lol_dreamer.training.config import TrainConfig
    from lol_dreamer.training.distributed import barrier, init_distributed
    from lol_dreamer.training.state import refuse_existing_run
    from lol_dreamer.world_model_export import copy_world_model_assets
    from lol_dreamer.world_model_training import (
        batch_lengths,
        held_out_eval,
        open_latent_split,
    )

    wm, out = Path(args.world_model), Path(args.out)
    if args.task not in TASK_INDEX:
        raise ValueError(f"unknown task {args.task!r}; choose one of {', '.join(TASKS)}")
    task = TASK_INDEX[args.task]
    refuse_existing_run(out, args.resume)
    if out.resolve() == wm.resolve():
        raise ValueError(
            "--out must differ from --world-model (the world model is read, never overwritten)"
        )
    wm_cfg = load_run_config(wm)
    split = open_latent_split(args.data, wm / "tokenizer", args.held_out, args.split_seed)
    train_set, held = split.train, split.held

    base_cfg, base_state = parent_dynamics(wm)
    dyn_cfg = with_agent_tokens(base_cfg, args.agent_tokens)
    torch.manual_seed(args.seed)
    model = AgentWorldModel(dyn_cfg, heads_config(args.heads_preset, dyn_cfg.dim, args.mtp))
    fresh = load_dynamics_into(model, base_state)
    short, long = batch_lengths(train_set.lengths, dyn_cfg.context, args.seq_len)
    cfg = TrainConfig.from_args(args)
    fields = ("latents", "actions", "labeled", "rewards", "terminated")

    info = init_distributed(args.device)
    sampler = MixtureSampler(
        train_set, long, args.batch_size, task, relevant_fraction=args.relevant_fraction, seed=args.seed,
        fields=fields, rank=info.rank, world_size=info.world_size,
    )  # fmt: skip
    shortcut = ShortcutConfig(k_max=dyn_cfg.k_max, short_len=short, long_len=long)
    objective = Phase2Objective(
        Phase2Config(task=task, video=args.video_weight, bc=args.bc_weight, reward=args.reward_weight,
                     cont=args.continue_weight, shortcut=shortcut)
    )  # fmt: skip
    held_len = min(long, int(held.lengths.max()))
    try:
        held_sampler: Any = MixtureSampler(
            held, held_len, args.batch_size, task, seed=args.seed + 9973, fields=fields
        )
    except ValueError:
        held_sampler = HalfRelevant(
            SequenceSampler(held, held_len, args.batch_size, seed=args.seed + 9973, fields=fields)
        )
    eval_batches = [held_sampler.sample(i) for i in range(max(1, args.eval_batches))]

    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        copy_world_model_assets(wm, out)
    barrier()
    model_cfg = {**model.config, "mtp_distance": 0}
    run_config = {
        "kind": "agent",
        "model": model_cfg,
        "heads": model_cfg["heads"],
        "parent": str(wm.resolve()),
        "task": args.task,
        "task_id": task,
        "mtp": int(args.mtp),
        "act_distance": 0,
        "new_parameters": fresh,
        "trunk_lr_scale": args.trunk_lr_scale,
        "objective": objective.cfg.to_dict(),
        "data": split.record(short, long, relevant_windows=sampler.num_relevant_windows),
        "tokenizer": {"path": split.ident["path"], "sha256": split.ident["sha256"]},
        "world_model": dict(wm_cfg.get("world_model") or {}, context=dyn_cfg.context),
    }
    result = train(
        model, objective, sampler, cfg, out, params=trainable_groups(model, fresh, args.trunk_lr_scale),
        eval_fn=held_out_eval(objective, eval_batches), run_config=run_config, resume=args.resume,
    )  # fmt: skip
    if info.is_main and cfg.progress:
        print(
            f"Agent world model: {out} (task {args.task}, MTP L={args.mtp}, acting distance 0, step "
            f"{result.step}; parent {wm}). It is a complete world model with policy, reward and continue "
            f"heads: play it with `lol-dreamer play --world-model {out}`, load the policy with "
            f"lol_dreamer.policy.load_policy({str(out)!r}, task={args.task!r})."
        )
    return 0
