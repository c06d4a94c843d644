"""Phase 3: imagination training with PMPO on a frozen world model (SPEC §7, DreamerV4 §3.4).

``lol-dreamer train imagine --agent BC --data DIR --out PMPO``:

1. loads the phase-2 agent folder ``BC`` (dynamics with agent tokens + policy / reward / continue
   heads); the transformer and the reward and continue heads are frozen (no gradients, eval mode,
   not in the optimiser);
2. takes the behavioural prior as a frozen copy of the *trained* phase-2 policy head, used at the
   MTP distance the policy acts with (``act_distance`` of ``BC``), initialises the trained policy
   from the same head and adds a new two-hot value head with a zero output layer;
3. every optimiser step imagines one rollout of ``H`` steps per dataset context through the
   natively batched dream env and a TorchRL ``Collector`` (:mod:`lol_dreamer.agents.imagine_env`),
   computes TD(λ) returns from the predicted rewards and continues and the value head, and
   optimises the PMPO loss (:class:`~lol_dreamer.agents.pmpo.PMPOLoss`) on the policy and value
   heads only, on the shared training loop;
4. writes ``PMPO`` as a complete agent world model (config kind ``"imagine"``, ``parent`` = ``BC``,
   the full model in ``model.safetensors``, ``BC``'s tokenizer and start clips) with one metrics row
   per step carrying ``loss``, ``loss_policy``, ``loss_kl``, ``loss_value`` and ``imagined_return``;
5. optionally lets the live policy play the real game every few steps (``real/return``,
   ``real/return_ci95``, ``real/episodes``; the prior in a ``step 0`` row;
   :mod:`lol_dreamer.agents.real_eval`) and plots ``imagined_vs_real.png`` at the end.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lol_dreamer.agents.actor import ImagineActor
from lol_dreamer.agents.imagine_env import (
    DatasetContexts,
    ImaginationEnv,
    ImaginationRollouts,
    StartClipContexts,
)
from lol_dreamer.agents.pmpo import PMPOLoss
from lol_dreamer.agents.real_eval import RealEvalConfig, RealEvaluator
from lol_dreamer.agents.returns import GAMMA, LAMBDA
from lol_dreamer.models.agent_model import AgentWorldModel
from lol_dreamer.training.config import LossOutput, TrainConfig, TrainResult
from lol_dreamer.training.trainer import Trainer, resolve_device

LOSS_TERMS = ("loss_policy", "loss_kl", "loss_value")


@dataclass
class ImagineConfig:
    """Phase-3 settings (saved as ``config.json["imagine"]``).

    Attributes:
        horizon: imagined steps per rollout H.
        batch: rollouts (dataset contexts) per optimiser step N.
        context: frames per context (None = the world model's start-clip length).
        mtp_distance: policy output layer that acts (None = the phase-2 run's acting distance).
        alpha, beta: PMPO weights of D+ and of the KL to the prior.
        gamma, lmbda: TD(λ) discount and λ.
        task: task name the agent tokens are conditioned on (None = the phase-2 run's).
        steps_per_frame: denoising steps K per imagined frame (None = the world model's).
    """

    horizon: int = 32
    batch: int = 16
    context: int | None = None
    mtp_distance: int | None = None
    alpha: float = 0.5
    beta: float = 0.3
    gamma: float = GAMMA
    lmbda: float = LAMBDA
    task: str | None = None
    steps_per_frame: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FrozenWorldModel(AgentWorldModel):
    """An :class:`AgentWorldModel` whose transformer and reward / continue heads stay in eval mode.

    Built around already loaded modules (:meth:`wrap`); the state dict keeps the ``dynamics.*`` /
    ``heads.*`` layout, so the phase-3 folder loads like any agent world model.
    """

    @classmethod
    def wrap(cls, dynamics: nn.Module, heads: nn.Module) -> FrozenWorldModel:
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.dynamics, model.heads = dynamics, heads
        return model

    def train(self, mode: bool = True) -> FrozenWorldModel:
        super().train(mode)
        for frozen in (self.dynamics, self.heads.reward, self.heads.cont):
            frozen.eval()
        return self


class ImagineObjective:
    """``objective(model, rollouts, step) -> LossOutput`` for the shared loop: the PMPO loss.

    ``terms`` are the three ``loss_*`` entries of :class:`PMPOLoss` (summed into ``loss``);
    ``metrics`` hold ``imagined_return`` (the mean predicted reward summed over the H imagined steps
    of a rollout), the mean λ-return, value, advantage, raw KL, |D+|/N and the policy entropy.
    """

    def __init__(self, loss: PMPOLoss) -> None:
        self.loss = loss

    def __call__(self, model: nn.Module, batch: Any, step: int) -> LossOutput:
        out = self.loss(batch)
        total = out["loss_policy"] + out["loss_kl"] + out["loss_value"]
        reward = batch.get(("next", "reward")).float()
        imagined = reward.reshape(reward.shape[0], -1).sum(1).mean()
        metrics = {
            "imagined_return": imagined,
            "lambda_return": out["return"],
            "value": out["value"],
            "advantage": out["advantage"],
            "kl": out["kl"],
            "frac_pos": out["frac_pos"],
            "entropy": out["entropy"],
        }
        return LossOutput(total, {k: out[k] for k in LOSS_TERMS}, metrics)


class ImagineTrainer(Trainer):
    """The shared loop with phase-3 metric names: ``loss_policy``, ``loss_kl``, ``loss_value`` and
    ``imagined_return`` as top-level keys of each ``metrics.jsonl`` row.

    With ``real_eval`` (an ``eval_fn(model, step) -> {"real/…"}``, e.g.
    :class:`~lol_dreamer.agents.real_eval.RealEvaluator`) and ``real_cfg.every > 0``, the policy also
    plays the real game before the first step (a ``{"step": 0, "real/…"}`` row: the prior) and
    after every ``every``-th and the last step (``real/…`` keys in that step's row). It runs through
    :meth:`Trainer.evaluate`: on rank 0, with the published (EMA when on) weights, in eval mode,
    from forked RNGs, so training and exact resume are unaffected. The ``perf/steps_per_s`` of a
    row with ``real/…`` keys includes the evaluation's time.
    """

    def __init__(
        self,
        *args: Any,
        real_eval: Callable[[nn.Module, int], dict] | None = None,
        real_cfg: RealEvalConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.real_eval = real_eval if real_cfg is not None and (real_cfg.every or 0) > 0 else None
        self.real_cfg = real_cfg

    def _real(self, step: int) -> dict[str, float]:
        """``real/…`` scalars of the policy after ``step`` steps, or {} when none is due."""
        if self.real_eval is None or not self.dist.is_main:
            return {}
        if not self.real_cfg.due(step, self.cfg.steps):
            return {}
        own, self.eval_fn = self.eval_fn, self.real_eval
        try:
            return self.evaluate()
        finally:
            self.eval_fn = own

    def _train_step(self, step: int) -> dict[str, Any]:
        if step == 0:
            prior = self._real(0)
            if prior and self.writes:
                self.log.write({"step": 0, **prior})
        row = super()._train_step(step)
        for k in LOSS_TERMS:
            row[k] = row.pop(f"loss/{k}")
        row["imagined_return"] = row.pop("metric/imagined_return")
        row.update(self._real(step + 1))
        return row


@dataclass
class Imagination:
    """Everything a phase-3 run is made of (see :func:`build_imagination`)."""

    model: FrozenWorldModel
    world_model: Any
    loss: PMPOLoss
    objective: ImagineObjective
    actor: ImagineActor
    env: ImaginationEnv
    rollouts: ImaginationRollouts
    config: ImagineConfig
    task: str
    agent_config: dict[str, Any]

    @property
    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.loss.trainable_parameters()


def _agent_task(cfg: dict[str, Any], task: str | None) -> tuple[str, int]:
    from lol_dreamer.actions import TASK_INDEX, TASKS

    name = task or cfg.get("task") or TASKS[int(cfg.get("task_id", 0))]
    if name not in TASK_INDEX:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return name, TASK_INDEX[name]


def acting_distance(cfg: dict[str, Any]) -> int:
    """The MTP distance a phase-2/3 run acts with (``model.mtp_distance``, ``act_distance``, else 0)."""
    model = cfg.get("model") or {}
    return int(model.get("mtp_distance", cfg.get("act_distance", 0)))


def without_held_out(dataset: Any, agent_cfg: dict[str, Any]) -> Any:
    """``dataset`` minus the episodes the phase-2 run held out (kept when nothing else is left)."""
    held = set((agent_cfg.get("data") or {}).get("held_out_episodes") or [])
    keep = [i for i, name in enumerate(dataset.names) if name not in held]
    return dataset.subset(keep) if keep and len(keep) < len(dataset) else dataset


def build_imagination(
    agent: str | Path,
    cfg: ImagineConfig,
    data: str | Path | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    rank: int = 0,
) -> Imagination:
    """Load a phase-2 agent folder and assemble the phase-3 learner around it.

    Args:
        agent: the phase-2 run folder (``lol-dreamer train agent``), a complete agent world model.
        cfg: phase-3 settings.
        data: a dataset tokenized with the agent's tokenizer (contexts); None = its start clips.
        device: where to run.
        seed: seed of the value-head initialisation, the contexts, the dream noise and the actions.
        rank: data-parallel rank; each rank imagines from its own contexts, noise and actions.
    Returns:
        An :class:`Imagination` whose ``rollouts.sample(step)`` and ``objective`` plug into the
        shared loop with ``params=trainable_parameters``.
    """
    from lol_dreamer.checkpoint import load_run_config
    from lol_dreamer.world_model import load_world_model

    agent = Path(agent)
    agent_cfg = load_run_config(agent)
    if agent_cfg.get("kind") != "agent":
        hint = (
            " (to continue a phase-3 run, pass its --out again with --resume; the prior must stay "
            "the phase-2 head)"
            if agent_cfg.get("kind") == "imagine"
            else ""
        )
        raise ValueError(
            f"{agent} is a {agent_cfg.get('kind')!r} run; --agent must be a phase-2 folder written "
            f"by `lol-dreamer train agent`{hint}"
        )
    task, task_id = _agent_task(agent_cfg, cfg.task)
    wm = load_world_model(agent, device=device)
    if not wm.has_heads or int(getattr(wm.dynamics.cfg, "n_agent", 0)) < 1:
        raise ValueError(
            f"{agent} has no agent tokens and heads; train them with `lol-dreamer train agent`"
        )
    n = acting_distance(agent_cfg) if cfg.mtp_distance is None else int(cfg.mtp_distance)
    heads = wm.heads
    torch.manual_seed(seed)
    heads.add_value_head()
    model = FrozenWorldModel.wrap(wm.dynamics, heads)
    # The prior is a frozen copy of the trained phase-2 head, taken before any phase-3 update.
    loss = PMPOLoss(
        heads, mtp_distance=n, alpha=cfg.alpha, beta=cfg.beta, gamma=cfg.gamma, lmbda=cfg.lmbda
    )
    model.requires_grad_(False)
    for p in loss.trainable_parameters():
        p.requires_grad_(True)

    length = int(cfg.context or wm.starts.context)
    stream = seed + 1_000_003 * int(rank)  # rank 0 keeps the plain seed
    if data is not None:
        from lol_dreamer.data import open_dataset
        from lol_dreamer.world_model_training import check_latents

        dataset = open_dataset(data)
        check_latents(dataset, agent / "tokenizer", wm.n_z, wm.d_z)
        dataset = without_held_out(dataset, agent_cfg)
        contexts: Any = DatasetContexts(dataset, cfg.batch, length, seed=stream)
    else:
        contexts = StartClipContexts(wm, cfg.batch, length, seed=stream)
    actor = ImagineActor(heads, mtp_distance=n, seed=stream)
    model.train()  # the heads train; the transformer, reward and continue heads stay in eval mode
    env = ImaginationEnv(wm, contexts, task_id, seed=stream, steps_per_frame=cfg.steps_per_frame)
    rollouts = ImaginationRollouts(env, actor, cfg.horizon, seed=stream)
    return Imagination(
        model=model, world_model=wm, loss=loss, objective=ImagineObjective(loss), actor=actor,
        env=env, rollouts=rollouts, config=cfg, task=task, agent_config=agent_cfg,
    )  # fmt: skip


def run_config(im: Imagination, agent: Path, data: str | Path | None) -> dict[str, Any]:
    """``config.json`` of a phase-3 run: an agent world model of kind ``"imagine"``."""
    model_cfg = {**im.model.config, "mtp_distance": im.actor.mtp_distance}
    a, ctx = im.agent_config, im.env.contexts
    return {
        "kind": "imagine",
        "model": model_cfg,
        "heads": model_cfg["heads"],
        "parent": str(agent.resolve()),
        "task": im.task,
        "task_id": im.env.task,
        "mtp": int(model_cfg["heads"]["mtp"]),
        "act_distance": im.actor.mtp_distance,
        "prior": {"run": str(agent.resolve()), "head": "policy", "mtp_distance": im.actor.mtp_distance},
        "imagine": {**im.config.to_dict(), "context": im.env.contexts.length},
        "data": {"path": str(Path(data).resolve()) if data is not None else None,
                 "contexts": "dataset windows" if data is not None else "start clips",
                 "episodes": [*ctx.sampler.dataset.names] if isinstance(ctx, DatasetContexts) else None},
        "world_model": dict(a.get("world_model") or {}),
    }  # fmt: skip


def train_imagine(
    agent: str | Path,
    out: str | Path,
    cfg: ImagineConfig,
    train_cfg: TrainConfig,
    data: str | Path | None = None,
    resume: bool = False,
    real_eval: RealEvalConfig | None = None,
) -> TrainResult:
    """Run phase 3 and write the run folder ``out`` (see the module docstring).

    Args:
        agent: phase-2 agent folder.
        out: the phase-3 run folder to write.
        cfg: phase-3 settings.
        train_cfg: optimiser settings of the shared loop (``steps`` counts optimiser steps).
        data: tokenized dataset for the contexts (None = the agent's stored start clips).
        resume: continue ``out`` from its ``state/``.
        real_eval: how often the live policy plays LaneSim (``real/…`` metrics, see
            :mod:`lol_dreamer.agents.real_eval`); None = never. At the end
            ``out/imagined_vs_real.png`` plots the imagined and real returns.
    Returns:
        The shared loop's :class:`TrainResult`.
    """
    from lol_dreamer.training.distributed import barrier, init_distributed
    from lol_dreamer.training.state import refuse_existing_run
    from lol_dreamer.world_model_export import copy_world_model_assets

    agent, out = Path(agent), Path(out)
    if out.resolve() == agent.resolve():
        raise ValueError(
            "--out must differ from --agent (the phase-2 run is read, never overwritten)"
        )
    refuse_existing_run(out, resume)
    info = init_distributed(train_cfg.device)
    device = resolve_device(train_cfg.device, info.local_rank)
    im = build_imagination(
        agent, cfg, data=data, device=device, seed=train_cfg.seed, rank=info.rank
    )
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        copy_world_model_assets(agent, out)
    barrier()
    real_eval = (real_eval or RealEvalConfig(every=0)).resolve(
        train_cfg.steps, int(im.world_model.res)
    )
    evaluator = RealEvaluator(
        im.model.heads, im.world_model, im.task, im.actor.mtp_distance, real_eval
    )
    cfg_json = {**run_config(im, agent, data), "real_eval": real_eval.to_dict()}
    try:
        trainer = ImagineTrainer(
            im.model, im.objective, im.rollouts, train_cfg, out,
            params=im.trainable_parameters, run_config=cfg_json, resume=resume,
            real_eval=evaluator, real_cfg=real_eval,
        )  # fmt: skip
        result = trainer.fit()
    finally:
        im.rollouts.close()
    if info.is_main:
        from lol_dreamer.agents.imagine_plot import plot_imagined_vs_real

        plot_imagined_vs_real(out)
    return result


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lol-dreamer train imagine`` (flags: :mod:`lol_dreamer.commands.train_imagine`)."""
    cfg = ImagineConfig(
        horizon=args.horizon, batch=args.batch, context=args.context, mtp_distance=args.mtp_distance,
        alpha=args.alpha, beta=args.beta, gamma=args.gamma, lmbda=args.lmbda, task=args.task,
        steps_per_frame=args.k,
    )  # fmt: skip
    train_cfg = TrainConfig.from_args(args, batch_size=args.batch)
    real = RealEvalConfig(
        every=args.real_eval_every, episodes=args.real_eval_episodes,
        max_steps=args.real_eval_max_steps,
    )  # fmt: skip
    result = train_imagine(
        args.agent, args.out, cfg, train_cfg, data=args.data, resume=args.resume, real_eval=real
    )
    if not args.quiet:
        print(
            f"Imagination-trained agent: {args.out} (kind 'imagine', parent {args.agent}, step "
            f"{result.step}). It is a complete agent world model: load the policy with "
            f"lol_dreamer.policy.load_policy({str(args.out)!r}) or evaluate it in LaneSim with "
            f"`lol-dreamer eval agent`. Imagined versus real return: "
            f"{Path(args.out) / 'imagined_vs_real.png'}."
        )
    return 0
