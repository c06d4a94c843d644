"""The phase-2 model: the dynamics transformer with agent tokens, plus the agent heads (SPEC §7).

One module so the shared trainer, the checkpoint registry and :func:`lol_dreamer.load_world_model`
treat it as a unit: ``config.json`` kind ``"agent"`` with ``model = {"dynamics": ..., "heads": ...}``,
and ``model.safetensors`` keys prefixed ``dynamics.`` and ``heads.``.

Dimension letters: ``b`` batch, ``t`` frames, ``g`` agent tokens per frame, ``d`` model width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel
from lol_dreamer.models.heads import AgentHeads, HeadsConfig


def agent_features(agent: Tensor) -> Tensor:
    """Agent-token outputs ``[b, t, g, d]`` → head inputs ``[b, t, d]`` (mean over the g tokens)."""
    if agent.dim() != 4:
        raise ValueError(f"agent-token outputs must be [b, t, g, d], got {tuple(agent.shape)}")
    return agent.mean(dim=2)


class AgentWorldModel(nn.Module):
    """``dynamics`` (with ``n_agent > 0``) and ``heads`` on its agent-token outputs.

    Args:
        dynamics: config of the dynamics transformer; ``n_agent`` must be positive.
        heads: config of the heads; ``dim`` must equal the dynamics width.

    Example:
        >>> dyn = DynamicsConfig.preset("test", n_z=8, d_z=4, n_agent=1)
        >>> m = AgentWorldModel(dyn, HeadsConfig.preset("test", dim=dyn.dim))
        >>> sorted({k.split(".")[0] for k in m.state_dict()})
        ['dynamics', 'heads']
    """

    def __init__(self, dynamics: DynamicsConfig, heads: HeadsConfig) -> None:
        super().__init__()
        if dynamics.n_agent < 1:
            raise ValueError(
                "the phase-2 model needs agent tokens: build the dynamics config with n_agent >= 1"
            )
        if heads.dim != dynamics.dim:
            raise ValueError(
                f"heads dim {heads.dim} must equal the dynamics width {dynamics.dim}; "
                "build them with HeadsConfig.preset(name, dim=dynamics.dim)"
            )
        self.dynamics = DynamicsModel(dynamics)
        self.heads = AgentHeads(heads)

    @property
    def config(self) -> dict[str, Any]:
        """The ``model`` section of ``config.json``."""
        return {"dynamics": self.dynamics.cfg.to_dict(), "heads": self.heads.config.to_dict()}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The dynamics forward pass (see :meth:`DynamicsModel.forward`)."""
        return self.dynamics(*args, **kwargs)

    def normalize_latents(self, z: Tensor) -> Tensor:
        """See :meth:`DynamicsModel.normalize_latents`."""
        return self.dynamics.normalize_latents(z)

    def denormalize_latents(self, z: Tensor) -> Tensor:
        """See :meth:`DynamicsModel.denormalize_latents`."""
        return self.dynamics.denormalize_latents(z)


def build_agent_model(cfg: dict[str, Any]) -> AgentWorldModel:
    """Checkpoint builder for kind ``"agent"``: ``{"dynamics": {...}, "heads": {...}}``."""
    if not isinstance(cfg, dict) or "dynamics" not in cfg or "heads" not in cfg:
        raise ValueError("an agent run's model config needs 'dynamics' and 'heads' sections")
    return AgentWorldModel(
        DynamicsConfig.from_dict(cfg["dynamics"]), HeadsConfig.from_dict(cfg["heads"])
    )


def build_dynamics_model(cfg: dict[str, Any]) -> DynamicsModel:
    """Checkpoint builder for kind ``"dynamics"``: a :class:`DynamicsConfig` dict."""
    return DynamicsModel(DynamicsConfig.from_dict(cfg))


def with_agent_tokens(dynamics_cfg: DynamicsConfig, n_agent: int = 1) -> DynamicsConfig:
    """A copy of ``dynamics_cfg`` with ``n_agent`` agent tokens (everything else unchanged)."""
    d = dynamics_cfg.to_dict()
    d["n_agent"] = int(n_agent)
    return DynamicsConfig.from_dict(d)


@torch.no_grad()
def load_dynamics_into(model: AgentWorldModel, state: dict[str, Tensor]) -> list[str]:
    """Copy a phase-1b dynamics state dict into the phase-2 model's transformer.

    Every key of the phase-1b model must exist with the same shape; the agent-token parameters
    (``agent_tokens``, ``task_emb``) are new and keep their initialisation.

    Returns:
        The names of the parameters that were not in ``state`` (the new agent-token ones).
    """
    own = model.dynamics.state_dict()
    bad = [k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(
            f"the world model's dynamics weights do not fit this phase-2 model ({bad[:5]}); the phase-2 "
            "model must be built from the same dynamics config plus agent tokens"
        )
    for k, v in state.items():
        own[k].copy_(v.to(own[k].dtype))
    return [k for k in own if k not in state]
