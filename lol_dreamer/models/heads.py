"""Agent heads on the dynamics model's agent-token outputs (SPEC §7, DreamerV4 §3.3, arXiv 2509.24527).

Each head type has a small MLP trunk shared by every multi-token-prediction (MTP) distance and ONE
output layer per distance ``n = 0..L`` (L = 8). Output layers start at zero, so an untrained policy
is uniform over movement and keys, an untrained reward/value head predicts 0 and an untrained
continue head says 0.5.

MTP alignment with stored episodes (docs/architecture.md): ``frames[t]`` is observed, then
``actions[t]`` is taken and yields ``rewards[t]`` (the reward of the transition
``frames[t] → frames[t+1]``); ``terminated[t]`` is True when the episode ended after ``actions[t]``.
The agent token at slot t has seen ``z_0..z_t`` and ``a_0..a_{t-1}`` (the action leading *into* each
frame). The policy acts from the state it is in; the reward and continue of a transition are read
from the state it leads to (SPEC §7: ``r_{t+1}``, ``c_{t+1}`` for ``s_t → s_{t+1}``). So from ``h_t``:

| head      | distance n at slot t predicts                                         |
|-----------|-----------------------------------------------------------------------|
| policy    | ``actions[t + n]``                                                    |
| reward    | ``rewards[t + n − 1]``: the transition into frame ``t + n`` (task's entry) |
| continue  | ``not terminated[t + n − 1]``                                         |
| value     | (phase 3, single distance) the return from ``s_t``                    |

A reward/continue target index below 0 (slot 0 at distance 0: no transition led into the first
frame of a window) is masked, and so is one past the window's last step. The window's last
transition is a target at distances n ≥ 1 only (the frame it leads into is not in the window; for
an episode's final step it is not stored at all, so the distance-0 heads learn the terminal
transition's reward and continue flag only through the shared trunk).
:func:`transition_mtp_targets` builds these targets; phase 2 and the world-model evaluation share
:func:`to_slots`. After a dream step with ``a_t`` the distance-0 reward and continue heads on the
new frame's features are therefore that step's reward and continue.

Dimension letters: ``b`` batch, ``t`` time, ``l`` MTP distances (L + 1), ``d`` agent-token width,
``k`` two-hot bins.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lol_dreamer.actions import N_KEYS, N_MOVE
from lol_dreamer.config_utils import strict_from_dict
from lol_dreamer.models.layers import RMSNorm
from lol_dreamer.models.twohot import TwoHot


@dataclass
class HeadsConfig:
    """Sizes of the agent heads.

    Attributes:
        dim: width of the agent-token features ``h`` (the dynamics model width).
        hidden: width of each head's MLP trunk.
        layers: hidden layers in each trunk.
        mtp: L, the largest multi-token-prediction distance (heads predict n = 0..L).
        bins: two-hot bins for reward and value.
        n_move: movement classes (18 directions + stand).
        n_keys: independent binary keys.
        value: whether a value head exists (added for phase 3).
    """

    dim: int = 256
    hidden: int = 256
    layers: int = 2
    mtp: int = 8
    bins: int = 255
    n_move: int = N_MOVE
    n_keys: int = N_KEYS
    value: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadsConfig:
        return strict_from_dict(cls, d)

    @classmethod
    def preset(cls, name: str, dim: int | None = None) -> HeadsConfig:
        """Named sizes; ``dim`` should be the dynamics model width the heads sit on."""
        table = {
            "test": dict(dim=32, hidden=32, layers=1, mtp=2),
            "nano": dict(dim=128, hidden=128, layers=1),
            "tiny": dict(dim=256, hidden=256, layers=2),
            "small": dict(dim=512, hidden=512, layers=2),
            "medium": dict(dim=768, hidden=768, layers=2),
            "large": dict(dim=1024, hidden=1024, layers=2),
        }
        if name not in table:
            raise ValueError(f"unknown heads preset {name!r}; choose one of {sorted(table)}")
        cfg = cls(**table[name])
        if dim is not None:
            cfg.dim = dim
        return cfg


class Trunk(nn.Module):
    """``RMSNorm → [Linear → RMSNorm → SiLU] × layers`` on ``[..., dim]`` → ``[..., hidden]``."""

    def __init__(self, dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = [RMSNorm(dim)]
        width = dim
        for _ in range(layers):
            mods += [nn.Linear(width, hidden, bias=False), RMSNorm(hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*mods)
        self.out_dim = width

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class MTPLinear(nn.Module):
    """One zero-initialised linear output layer per MTP distance, stored as one tensor.

    Args:
        in_dim, out_dim: layer sizes; n_dist: number of distances (L + 1).
    """

    def __init__(self, in_dim: int, out_dim: int, n_dist: int) -> None:
        super().__init__()
        self.n_dist = n_dist
        self.weight = nn.Parameter(torch.zeros(n_dist, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(n_dist, out_dim))

    def forward(self, x: Tensor, n: int | None = 0) -> Tensor:
        """``x [..., in]`` → ``[..., out]`` for distance ``n``, or ``[..., l, out]`` for all (``n=None``)."""
        if n is None:
            return torch.einsum("...i,lio->...lo", x, self.weight) + self.bias
        if not 0 <= n < self.n_dist:
            raise ValueError(f"MTP distance must be in 0..{self.n_dist - 1}, got {n}")
        return x @ self.weight[n] + self.bias[n]


def _bernoulli_entropy(logits: Tensor) -> Tensor:
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))


class ActionDist:
    """Factorised LoL action distribution: 19-way categorical movement × 8 independent Bernoulli keys.

    Args:
        move_logits: ``[..., 19]``.
        key_logits: ``[..., 8]`` (logit of "pressed").
    """

    def __init__(self, move_logits: Tensor, key_logits: Tensor) -> None:
        if move_logits.shape[:-1] != key_logits.shape[:-1]:
            raise ValueError(
                f"movement and key logits need the same batch shape, got {tuple(move_logits.shape)} "
                f"and {tuple(key_logits.shape)}"
            )
        self.move_logits = move_logits
        self.key_logits = key_logits

    @property
    def batch_shape(self) -> torch.Size:
        return self.move_logits.shape[:-1]

    def _move_logp(self) -> Tensor:
        return F.log_softmax(self.move_logits.float(), dim=-1)

    def log_prob(self, action: Tensor) -> Tensor:
        """``ln π(a)`` for ``action int64 [..., 9]`` (broadcast against the batch shape) → ``[...]``."""
        if action.shape[-1] != 1 + self.key_logits.shape[-1]:
            raise ValueError(
                f"action must end in {1 + self.key_logits.shape[-1]} = [movement, keys...], "
                f"got shape {tuple(action.shape)}"
            )
        move_logp = self._move_logp()
        move = action[..., 0].long()
        shape = torch.broadcast_shapes(move.shape, self.batch_shape)
        lp_move = move_logp.expand(*shape, move_logp.shape[-1]).gather(
            -1, move.expand(shape).unsqueeze(-1)
        )[..., 0]
        keys = action[..., 1:].float()
        kl = self.key_logits.float()
        lp_keys = (keys * F.logsigmoid(kl) + (1 - keys) * F.logsigmoid(-kl)).sum(-1)
        return lp_move + lp_keys

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``int64 [..., 9]``; ``generator`` makes the draw reproducible."""
        probs = F.softmax(self.move_logits.float(), dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        move = torch.multinomial(flat, 1, generator=generator).reshape(*self.batch_shape, 1)
        u = torch.rand(self.key_logits.shape, generator=generator, device=self.key_logits.device)
        keys = (u < torch.sigmoid(self.key_logits.float())).long()
        return torch.cat((move, keys), dim=-1)

    def mode(self) -> Tensor:
        """Most likely action ``int64 [..., 9]`` (argmax movement, keys with p > 0.5)."""
        move = self.move_logits.argmax(-1, keepdim=True)
        keys = (self.key_logits > 0).long()
        return torch.cat((move, keys), dim=-1)

    def entropy(self) -> Tensor:
        """Exact entropy of the factorised distribution, ``[...]``."""
        logp = self._move_logp()
        h_move = -(logp.exp() * logp).sum(-1)
        return h_move + _bernoulli_entropy(self.key_logits.float()).sum(-1)

    def kl(self, other: ActionDist) -> Tensor:
        """Exact ``KL[self ‖ other]``, summed over the independent factors, ``[...]``."""
        lp, lq = self._move_logp(), other._move_logp()
        kl_move = (lp.exp() * (lp - lq)).sum(-1)
        a, b = self.key_logits.float(), other.key_logits.float()
        p = torch.sigmoid(a)
        kl_keys = p * (F.logsigmoid(a) - F.logsigmoid(b)) + (1 - p) * (
            F.logsigmoid(-a) - F.logsigmoid(-b)
        )
        return kl_move + kl_keys.sum(-1)

    def detach(self) -> ActionDist:
        return ActionDist(self.move_logits.detach(), self.key_logits.detach())


class PolicyHead(nn.Module):
    """``h [..., d]`` → :class:`ActionDist` for MTP distance ``n`` (batch ``[...]``) or all (``[..., l]``)."""

    def __init__(self, cfg: HeadsConfig) -> None:
        super().__init__()
        self.n_move = cfg.n_move
        self.trunk = Trunk(cfg.dim, cfg.hidden, cfg.layers)
        self.out = MTPLinear(self.trunk.out_dim, cfg.n_move + cfg.n_keys, cfg.mtp + 1)

    def forward(self, h: Tensor, n: int | None = 0) -> ActionDist:
        logits = self.out(self.trunk(h), n)
        return ActionDist(logits[..., : self.n_move], logits[..., self.n_move :])


class TwoHotHead(nn.Module):
    """A symexp two-hot scalar head (reward or value): ``h [..., d]`` → logits ``[..., k]``.

    Args:
        cfg: sizes; n_dist: number of output layers (L + 1 for rewards, 1 for values).
    """

    def __init__(self, cfg: HeadsConfig, n_dist: int) -> None:
        super().__init__()
        self.trunk = Trunk(cfg.dim, cfg.hidden, cfg.layers)
        self.out = MTPLinear(self.trunk.out_dim, cfg.bins, n_dist)
        self.twohot = TwoHot(cfg.bins)

    def forward(self, h: Tensor, n: int | None = 0) -> Tensor:
        return self.out(self.trunk(h), n)

    def predict(self, h: Tensor, n: int | None = 0) -> Tensor:
        """Expected value ``[...]`` (or ``[..., l]`` for ``n=None``)."""
        return self.twohot.decode(self(h, n))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Two-hot cross-entropy of ``logits [..., k]`` toward ``target [...]`` → ``[...]``."""
        return self.twohot.loss(logits, target)


class RewardHead(TwoHotHead):
    """Reward ``rewards[t+n−1]`` (the transition into frame t+n) from ``h_t``, one output layer per n = 0..L."""

    def __init__(self, cfg: HeadsConfig) -> None:
        super().__init__(cfg, cfg.mtp + 1)


class ValueHead(TwoHotHead):
    """Value ``v(s_t)`` from ``h_t`` (one output layer; phase 3)."""

    def __init__(self, cfg: HeadsConfig) -> None:
        super().__init__(cfg, 1)

    def forward(self, h: Tensor, n: int | None = 0) -> Tensor:
        return self.out(self.trunk(h), 0)


class ContinueHead(nn.Module):
    """Bernoulli "the episode went on after the action at t + n − 1" (it led into a live frame t + n).

    ``h [..., d]`` → logit ``[...]``.
    """

    def __init__(self, cfg: HeadsConfig) -> None:
        super().__init__()
        self.trunk = Trunk(cfg.dim, cfg.hidden, cfg.layers)
        self.out = MTPLinear(self.trunk.out_dim, 1, cfg.mtp + 1)

    def forward(self, h: Tensor, n: int | None = 0) -> Tensor:
        return self.out(self.trunk(h), n)[..., 0]

    def prob(self, h: Tensor, n: int | None = 0) -> Tensor:
        return torch.sigmoid(self(h, n))


@dataclass
class HeadsOutput:
    """What :meth:`AgentHeads.forward` returns for one MTP distance (or all of them)."""

    policy: ActionDist
    reward_logits: Tensor
    continue_logits: Tensor
    value_logits: Tensor | None


class AgentHeads(nn.Module):
    """Policy, reward and continue heads (+ the value head in phase 3) on agent-token features.

    State-dict prefixes: ``policy.``, ``reward.``, ``cont.``, ``value.``.

    Example:
        >>> heads = AgentHeads(HeadsConfig.preset("test"))
        >>> out = heads(torch.randn(2, 5, 32), n=0)
        >>> out.policy.sample().shape
        torch.Size([2, 5, 9])
    """

    def __init__(self, cfg: HeadsConfig) -> None:
        super().__init__()
        self.config = cfg
        self.policy = PolicyHead(cfg)
        self.reward = RewardHead(cfg)
        self.cont = ContinueHead(cfg)
        self.value: ValueHead | None = ValueHead(cfg) if cfg.value else None

    def add_value_head(self) -> ValueHead:
        """Create the (zero-initialised) value head for phase 3 if it does not exist yet."""
        if self.value is None:
            self.config.value = True
            ref = next(self.parameters())
            self.value = ValueHead(self.config).to(device=ref.device, dtype=ref.dtype)
        return self.value

    def forward(self, h: Tensor, n: int | None = 0) -> HeadsOutput:
        if h.shape[-1] != self.config.dim:
            raise ValueError(
                f"agent features must be [..., {self.config.dim}], got {tuple(h.shape)}; "
                "the heads config dim must equal the dynamics model width"
            )
        return HeadsOutput(
            policy=self.policy(h, n),
            reward_logits=self.reward(h, n),
            continue_logits=self.cont(h, n),
            value_logits=self.value(h) if self.value is not None else None,
        )


def mtp_targets(x: Tensor, L: int, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Targets ``x[t + n]`` for every slot t and distance n = 0..L, zero-padded past the end.

    Args:
        x: ``[b, t, ...]`` per-step quantity (actions, rewards, terminal flags).
        L: largest distance.
        valid: optional ``[b, t]`` bool mask of usable steps (e.g. ``labeled`` for actions).
    Returns:
        ``(targets [b, t, L+1, ...], valid [b, t, L+1])``: ``targets[:, t, n] = x[:, t + n]``;
        valid is False where ``t + n >= T`` or the target step is masked.
    """
    b, t = x.shape[:2]
    pad = torch.zeros(b, L, *x.shape[2:], dtype=x.dtype, device=x.device)
    xp = torch.cat((x, pad), dim=1)
    targets = torch.stack([xp[:, n : n + t] for n in range(L + 1)], dim=2)
    v = torch.ones(b, t, dtype=torch.bool, device=x.device) if valid is None else valid.bool()
    vp = torch.cat((v, torch.zeros(b, L, dtype=torch.bool, device=x.device)), dim=1)
    valid_out = torch.stack([vp[:, n : n + t] for n in range(L + 1)], dim=2)
    return targets, valid_out


def to_slots(x: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-transition quantity in stored alignment → slot alignment: slot k holds ``x[k − 1]``.

    ``rewards[t]`` and ``terminated[t]`` belong to the transition ``frames[t] → frames[t+1]``, whose
    outcome is read from the features of the frame it leads to, slot ``t + 1``. Slot 0 has no such
    transition inside the window and is invalid; the last transition lands one slot past the
    window (slot T), where it can still be a multi-token-prediction target of earlier slots. The
    counterpart of :func:`lol_dreamer.models.dynamics.shift_actions` for what the reward and
    continue heads predict.

    Args:
        x: ``[b, T, ...]`` (rewards, continue flags).
        valid: optional ``[b, T]`` bool mask of usable steps (stored alignment).
    Returns:
        ``(x_slot [b, T + 1, ...], valid_slot [b, T + 1])`` with ``x_slot[:, k] = x[:, k − 1]``,
        ``x_slot[:, 0] = 0`` and ``valid_slot[:, 0] = False``.

    Example:
        >>> to_slots(torch.tensor([[5.0, 6.0, 7.0]]))
        (tensor([[0., 5., 6., 7.]]), tensor([[False,  True,  True,  True]]))
    """
    b, t = x.shape[:2]
    xs = torch.cat((torch.zeros_like(x[:, :1]), x), dim=1)
    v = torch.ones(b, t, dtype=torch.bool, device=x.device) if valid is None else valid.bool()
    vs = torch.cat((torch.zeros_like(v[:, :1]), v), dim=1)
    return xs, vs


def transition_mtp_targets(x: Tensor, L: int, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Reward / continue targets: ``x[t + n − 1]`` for slot t and distance n = 0..L.

    Args:
        x: ``[b, T, ...]`` per-transition quantity in stored alignment (``rewards[:, t]`` from
            ``actions[:, t]``; ``1 − terminated``).
        L: largest distance.
        valid: optional ``[b, T]`` bool mask of usable steps (stored alignment).
    Returns:
        ``(targets [b, T, L+1, ...], valid [b, T, L+1])``: ``targets[:, t, n] = x[:, t + n − 1]``;
        valid is False where ``t + n − 1 < 0`` (slot 0 at distance 0), ``t + n − 1 ≥ T`` or the
        target step is masked. The window's last transition is a target at distances n ≥ 1 only:
        the frame it leads into is not in the window.
    """
    t = x.shape[1]
    xs, vs = to_slots(x, valid)
    targets, ok = mtp_targets(xs, L, vs)
    return targets[:, :t], ok[:, :t]


def uniform_action_logprob(n_move: int = N_MOVE, n_keys: int = N_KEYS) -> float:
    """``ln π(a)`` of any action under the uniform (zero-logit) policy."""
    return -math.log(n_move) - n_keys * math.log(2.0)
