"""Phase-2 head loss: behaviour cloning, reward and continue modelling with multi-token prediction.

DreamerV4 §3.3 (arXiv 2509.24527): from the agent-token output ``h_t`` each head predicts ``n = 0..L``
steps ahead, and the loss is ``−Σ_n [ln p(a_{t+n} | h_t) + ln p(r_{t+n} | h_t)]``; we add the
continue head's binary cross-entropy on ``c_{t+n}``. In the paper's (and SPEC §7's) indexing
``r_{t+n}`` is the reward of the transition into state ``s_{t+n}``, which in stored alignment is
``rewards[t+n−1]`` (``rewards[t]`` comes from ``actions[t]``, taken in ``frames[t]``); likewise
``c_{t+n} = not terminated[t+n−1]``. So at slot t, distance n:

- policy   → ``actions[t+n]``;
- reward   → ``rewards[t+n−1]``, continue → ``not terminated[t+n−1]`` (slot 0 at n = 0 is masked).

The reward and continue of a step are thus read from the features of the frame that step produced,
which is how the dream environments and imagination read them. Alignment is documented in
:mod:`lol_dreamer.models.heads`. The dynamics loss is added by the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lol_dreamer.models.heads import AgentHeads, mtp_targets, transition_mtp_targets


def _masked_mean_per_distance(x: Tensor, valid: Tensor) -> Tensor:
    """Mean over ``[b, t]`` of ``x [b, t, l]`` where valid, then summed over distances l."""
    v = valid.float()
    per_n = (x * v).sum((0, 1)) / v.sum((0, 1)).clamp_min(1.0)
    return per_n.sum()


def select_task_reward(rewards: Tensor, task: Tensor) -> Tensor:
    """Pick each sequence's task entry: ``rewards [b, t, n_tasks]``, ``task int64 [b]`` → ``[b, t]``."""
    if rewards.dim() != 3:
        raise ValueError(f"rewards must be [b, t, n_tasks], got {tuple(rewards.shape)}")
    idx = task.long().view(-1, 1, 1).expand(rewards.shape[0], rewards.shape[1], 1)
    return rewards.gather(-1, idx)[..., 0]


def agent_head_loss(
    heads: AgentHeads,
    h: Tensor,
    actions: Tensor,
    rewards: Tensor,
    terminated: Tensor,
    action_valid: Tensor | None = None,
    step_valid: Tensor | None = None,
) -> dict[str, Tensor]:
    """Raw (un-weighted) phase-2 head losses, each summed over MTP distances n = 0..L.

    For every distance n the negative log-likelihood is averaged over the slots ``t`` whose target
    exists (and is valid), then the distances are summed, following
    ``−Σ_n [ln p(a_{t+n} | h_t) + ln p(r_{t+n} | h_t)]``. The BC target is ``actions[t+n]``; the
    reward and continue targets are ``rewards[t+n−1]`` and ``not terminated[t+n−1]`` (the transition
    into frame ``t+n``), invalid where ``t+n−1 < 0`` or ``t+n ≥ T``.

    Args:
        heads: the agent heads.
        h: agent-token features ``[b, t, d]`` (slot t has seen ``z_{≤t}``, ``a_{<t}``).
        actions: ``int64 [b, t, 9]``, ``actions[:, t]`` taken after ``frames[:, t]``.
        rewards: ``[b, t]`` rewards of the task in stored alignment, ``rewards[:, t]`` from
            ``actions[:, t]`` (see :func:`select_task_reward`); shifted into slots here.
        terminated: ``bool [b, t]``, True when the episode ended after ``actions[:, t]``.
        action_valid: optional ``bool [b, t]`` (the dataset's ``labeled`` mask, and/or the
            task-relevant half of the batch): BC uses only these steps as targets.
        step_valid: optional ``bool [b, t]`` of real (non-padding) steps for reward and continue.
    Returns:
        ``{"bc", "reward", "continue"}`` scalar tensors (nats).
    """
    L = heads.config.mtp
    if h.dim() != 3 or actions.shape[:2] != h.shape[:2] or actions.shape[-1] != 9:
        raise ValueError(
            f"expected h [b, t, d] and actions [b, t, 9] with the same b, t; got {tuple(h.shape)} "
            f"and {tuple(actions.shape)}"
        )
    if rewards.shape != h.shape[:2] or terminated.shape != h.shape[:2]:
        raise ValueError(
            f"rewards and terminated must be [b, t] = {tuple(h.shape[:2])}, got "
            f"{tuple(rewards.shape)} and {tuple(terminated.shape)}; pick the task column first"
        )
    if action_valid is None or step_valid is None:
        a_valid = step_valid if action_valid is None else action_valid
    else:
        a_valid = action_valid.bool() & step_valid.bool()
    out = heads(h, n=None)  # every distance at once: batch [b, t, l]

    a_tgt, a_ok = mtp_targets(actions, L, a_valid)  # [b, t, l, 9], [b, t, l]
    bc = -out.policy.log_prob(a_tgt)  # [b, t, l]

    # reward / continue of the transition into frame t + n: rewards[t + n − 1] (slot 0, n = 0 masked)
    r_tgt, r_ok = transition_mtp_targets(rewards.float(), L, step_valid)
    rew = heads.reward.loss(out.reward_logits, r_tgt)  # [b, t, l]

    c_tgt, c_ok = transition_mtp_targets((~terminated.bool()).float(), L, step_valid)
    cont = F.binary_cross_entropy_with_logits(out.continue_logits.float(), c_tgt, reduction="none")

    return {
        "bc": _masked_mean_per_distance(bc, a_ok),
        "reward": _masked_mean_per_distance(rew, r_ok),
        "continue": _masked_mean_per_distance(cont, c_ok),
    }


def agent_head_loss_total(
    terms: dict[str, Tensor], weights: dict[str, float] | None = None
) -> Tensor:
    """Weighted sum of :func:`agent_head_loss` terms (all weights 1 by default)."""
    weights = weights or {}
    return torch.stack([weights.get(k, 1.0) * v for k, v in terms.items()]).sum()
