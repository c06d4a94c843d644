"""TD(λ) returns for imagined rollouts (SPEC §7; DreamerV4 eq. 10, arXiv 2509.24527).

Index convention for a rollout of horizon H from states ``s_0..s_H``: ``rewards[:, t]`` and
``continues[:, t]`` are ``r_{t+1}`` and ``c_{t+1}``, the reward and continue predicted for the
transition ``s_t → s_{t+1}``; ``values[:, t] = v(s_t)`` for ``t = 0..H``. Then

    R^λ_t = r_{t+1} + γ c_{t+1} ((1 − λ) v(s_{t+1}) + λ R^λ_{t+1}),   R^λ_H = v(s_H).

This is TorchRL's ``TDLambdaEstimator`` with reward and done stored under ``"next"`` and
``c = 1 − terminated`` (tests check the two agree); here ``c`` may also be a probability.
"""

from __future__ import annotations

import torch
from torch import Tensor

GAMMA = 0.997
LAMBDA = 0.95


def td_lambda_returns(
    rewards: Tensor,
    continues: Tensor,
    values: Tensor,
    gamma: float = GAMMA,
    lmbda: float = LAMBDA,
    dones: Tensor | None = None,
) -> Tensor:
    """λ-returns ``R^λ_t`` for ``t = 0..H−1``.

    Args:
        rewards: ``[b, H]``, ``r_{t+1}``.
        continues: ``[b, H]``, ``c_{t+1}`` in [0, 1] (1 = the episode goes on).
        values: ``[b, H + 1]``, ``v(s_0) .. v(s_H)``.
        gamma: discount γ (0.997).
        lmbda: λ (0.95).
        dones: optional bool ``[b, H]``: the trajectory stops after step t (termination *or*
            truncation, e.g. a collector resetting the env); the return then bootstraps from
            ``v(s_{t+1})`` alone instead of continuing into the next episode, as TorchRL does.
            Termination itself is expressed through ``continues``.
    Returns:
        ``[b, H]`` returns (differentiable in all inputs; detach as needed).

    Example:
        >>> td_lambda_returns(torch.ones(1, 2), torch.ones(1, 2), torch.zeros(1, 3), 1.0, 1.0)
        tensor([[2., 1.]])
    """
    if rewards.shape != continues.shape or rewards.dim() != 2:
        raise ValueError(
            f"rewards and continues must both be [b, H], got {tuple(rewards.shape)} and {tuple(continues.shape)}"
        )
    b, horizon = rewards.shape
    if values.shape != (b, horizon + 1):
        raise ValueError(
            f"values must be [b, H + 1] = {(b, horizon + 1)} (v(s_0)..v(s_H)), got {tuple(values.shape)}"
        )
    if dones is not None and dones.shape != rewards.shape:
        raise ValueError(f"dones must be [b, H] like rewards, got {tuple(dones.shape)}")
    out = []
    ret = values[:, horizon]  # R^λ_H = v(s_H)
    for t in reversed(range(horizon)):
        if dones is not None:  # a trajectory boundary: R^λ_{t+1} is replaced by v(s_{t+1})
            ret = torch.where(dones[:, t].bool(), values[:, t + 1], ret)
        # DreamerV4 eq. 10 (arXiv 2509.24527), explicit indices as in SPEC §7
        ret = rewards[:, t] + gamma * continues[:, t] * (
            (1 - lmbda) * values[:, t + 1] + lmbda * ret
        )
        out.append(ret)
    return torch.stack(out[::-1], dim=1)
