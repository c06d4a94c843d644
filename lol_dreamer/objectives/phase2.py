"""Phase-2 objective: agent heads by behaviour cloning and reward modelling, video loss kept on (SPEC §7).

DreamerV4 §3.3 (arXiv 2509.24527): agent tokens are added to the dynamics transformer and the heads
read their outputs; the loss is ``−Σ_n [ln p(a_{t+n} | h_t) + ln p(r_{t+n} | h_t)]`` over MTP distances
``n = 0..L`` (plus our continue term), with the dynamics (shortcut) loss kept on and the latents
kept noisy. Batches come from :class:`lol_dreamer.data.MixtureSampler`: rows with ``relevant`` set
(task-relevant windows) train the heads, the other (uniform) rows train the video prediction.

- Uniform rows: :class:`~lol_dreamer.objectives.shortcut.ShortcutObjective` unchanged (alternating
  lengths, 30% independent frames, flow + bootstrap terms).
- Relevant rows: one forward pass at diffusion-forcing levels — every frame draws its own step size
  and signal level exactly as in :func:`~lol_dreamer.objectives.shortcut.sample_levels` and is noised
  to ``z̃ = (1 − τ)·z0 + τ·z1`` — so the agent tokens read noisy latents as during world-model
  training; the head losses of :func:`~lol_dreamer.objectives.agent_loss.agent_head_loss` apply to
  the agent-token features ``h_t`` of those rows only. Its reward and continue targets at slot t,
  distance n are the stored ``rewards[t+n−1]`` / ``not terminated[t+n−1]`` (the transition into
  frame t+n; slot 0 at n = 0 has none and is masked), the behaviour-cloning target ``actions[t+n]``.

Dimension letters: ``b`` rows, ``t`` frames, ``n`` = n_z, ``c`` = d_z, ``d`` model width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lol_dreamer.models.agent_model import agent_features
from lol_dreamer.models.dynamics import shift_actions
from lol_dreamer.objectives.agent_loss import agent_head_loss, select_task_reward
from lol_dreamer.objectives.shortcut import (
    ShortcutConfig,
    ShortcutObjective,
    model_latents,
    sample_levels,
)
from lol_dreamer.training import LossOutput


@dataclass
class Phase2Config:
    """Weights and settings of the phase-2 loss.

    Attributes:
        task: task id whose reward the reward head learns (index into ``TASKS``).
        video: weight of the shortcut loss on the uniform rows.
        bc: weight of the behaviour-cloning term.
        reward: weight of the reward term.
        cont: weight of the continue term.
        shortcut: the shortcut-forcing settings of the video loss.
    """

    task: int = 0
    video: float = 1.0
    bc: float = 1.0
    reward: float = 1.0
    cont: float = 1.0
    shortcut: ShortcutConfig = field(default_factory=ShortcutConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Phase2Config:
        d = dict(d)
        d["shortcut"] = ShortcutConfig.from_dict(d.get("shortcut", {}))
        return cls(**d)


ROW_KEYS = (
    "latents",
    "actions",
    "labeled",
    "rewards",
    "terminated",
    "task",
    "relevant",
    "episode",
    "start",
)


def select_rows(batch: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """The sub-batch of ``rows`` (bool ``[B]``) for every per-row tensor of ``batch``."""
    return {k: v[rows] for k, v in batch.items() if isinstance(v, Tensor) and k in ROW_KEYS}


def noisy_agent_features(
    model: nn.Module, batch: dict[str, Tensor], k_max: int, generator: torch.Generator | None = None
) -> Tensor:
    """Agent-token features of sequences whose latents are noised at diffusion-forcing levels.

    Args:
        model: an :class:`~lol_dreamer.models.agent_model.AgentWorldModel` (or a dynamics model
            with agent tokens), called like :meth:`DynamicsModel.forward`.
        batch: ``latents [b, t, n, c]``, ``actions [b, t, 9]`` (stored alignment), ``labeled [b, t]``,
            ``task [b]``.
        k_max: finest step count of the model.
        generator: optional random source for the levels and the noise.
    Returns:
        ``h [b, t, d]``: slot t has read ``z̃_{≤t}`` and ``a_{<t}``.
    """
    z1 = model_latents(model, batch["latents"])
    b, t = z1.shape[:2]
    actions, labeled = shift_actions(batch["actions"].long(), batch["labeled"].bool())
    tau_idx, step_idx = sample_levels((b, t), k_max, generator=generator, device=z1.device)
    z0 = torch.randn(z1.shape, generator=generator, device=z1.device)
    tau = (tau_idx.float() / k_max)[..., None, None]
    z_t = (1 - tau) * z0 + tau * z1
    out = model(z_t, tau_idx, step_idx, actions, labeled, task=batch["task"].long())
    if out.agent is None:
        raise ValueError(
            "the model has no agent tokens; build its dynamics config with n_agent >= 1"
        )
    return agent_features(out.agent)


class Phase2Objective:
    """Trainer objective ``objective(model, batch, step) -> LossOutput`` for phase 2.

    Raw terms: ``flow`` and ``bootstrap`` (video loss on the uniform rows), ``video`` (their
    weighted total), ``bc``, ``reward`` and ``continue`` (nats, summed over MTP distances, relevant
    rows only). ``loss = video·w_video + bc·w_bc + reward·w_reward + continue·w_cont``.

    Example:
        >>> obj = Phase2Objective(Phase2Config(task=0))
        >>> out = obj(agent_model, mixture_sampler.sample(0), step=0)   # doctest: +SKIP
    """

    def __init__(self, cfg: Phase2Config | None = None) -> None:
        self.cfg = cfg or Phase2Config()
        self.shortcut = ShortcutObjective(self.cfg.shortcut)

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> LossOutput:
        cfg = self.cfg
        if "relevant" not in batch:
            raise ValueError(
                "phase 2 needs batches from MixtureSampler (a 'relevant' [B] flag per row)"
            )
        relevant = batch["relevant"].bool()
        zero = batch["latents"].new_zeros(())
        terms: dict[str, Tensor] = {}
        metrics: dict[str, float] = {"frac_relevant": float(relevant.float().mean())}
        loss = zero
        if bool((~relevant).any()):
            video = self.shortcut(model, select_rows(batch, ~relevant), step)
            loss = loss + cfg.video * video.loss
            terms.update(
                flow=video.terms["flow"],
                bootstrap=video.terms["bootstrap"],
                video=video.loss.detach(),
            )
            metrics.update({f"video_{k}": v for k, v in video.metrics.items()})
        else:
            terms.update(flow=zero, bootstrap=zero, video=zero)
        if bool(relevant.any()):
            rel = select_rows(batch, relevant)
            h = noisy_agent_features(model, rel, cfg.shortcut.k_max)
            task = torch.full_like(rel["task"], cfg.task)
            head = agent_head_loss(
                model.heads, h, rel["actions"].long(), select_task_reward(rel["rewards"].float(), task),
                rel["terminated"].bool(), action_valid=rel["labeled"].bool(),
            )  # fmt: skip
            loss = (
                loss
                + cfg.bc * head["bc"]
                + cfg.reward * head["reward"]
                + cfg.cont * head["continue"]
            )
            terms.update({k: v.detach() for k, v in head.items()})
        else:
            terms.update(bc=zero, reward=zero, **{"continue": zero})
        return LossOutput(loss=loss, terms=terms, metrics=metrics)
