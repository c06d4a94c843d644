"""PMPO: the phase-3 policy and value loss as a TorchRL ``LossModule`` (SPEC §7).

DreamerV4 trains the policy in imagination with PMPO (DreamerV4 §3.4, eq. 11, arXiv 2509.24527):
the sign of the advantage, not its size, decides whether a state's action is pushed up or down,
and a reverse KL to the frozen behavioural prior (the trained phase-2 policy head) keeps the policy
near the demonstrations. No return or advantage normalisation and no entropy bonus are used.

Input: a TensorDict with batch ``[b, H]`` laid out the way a TorchRL collector on ``DreamTorchEnv`` writes rollouts
(keys configurable with ``set_keys``):

| key                          | shape          | meaning                                        |
|------------------------------|----------------|------------------------------------------------|
| ``"agent_features"``         | ``[b, H, d]``  | agent features ``h`` of ``s_t``                 |
| ``"action"``                 | ``int64 [b, H, 9]``, or ``move [b, H]`` + ``keys [b, H, 8]`` | ``a_t`` taken in ``s_t`` |
| ``("next", "agent_features")`` | ``[b, H, d]``  | features of ``s_{t+1}``                       |
| ``("next", "reward")``       | ``[b, H]`` or ``[b, H, 1]`` | ``r_{t+1}``                        |
| ``("next", "continue")``     | ``[b, H]`` or ``[b, H, 1]`` | ``c_{t+1}`` in [0, 1]; if absent, ``1 − ("next", "terminated")`` |
| ``("next", "done")``         | optional, bool | the env was reset after step t (cuts the λ-return there) |

Output ``loss_policy``, ``loss_kl`` (already × β), ``loss_value``; their sum is what to optimise.
Logged stats: ``kl`` (raw mean KL), ``frac_pos`` (|D+| / N), ``advantage``, ``return``, ``value``,
``entropy``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn
from torchrl.objectives import LossModule

from lol_dreamer.agents.returns import GAMMA, LAMBDA, td_lambda_returns
from lol_dreamer.models.heads import ActionDist, AgentHeads, PolicyHead
from lol_dreamer.policy import join_action


def pmpo_policy_loss(
    logp: Tensor, advantage: Tensor, kl: Tensor, alpha: float = 0.5, beta: float = 0.3
) -> tuple[Tensor, Tensor, Tensor]:
    """The PMPO objective on flat per-state quantities.

    Args:
        logp: ``ln π_θ(a|s)`` per state ``[N]`` (differentiable).
        advantage: ``A`` per state ``[N]`` (no gradient needed; its sign splits D+ / D−).
        kl: ``KL[π_θ(·|s) ‖ π_prior(·|s)]`` per state ``[N]``.
        alpha: weight of D+ (0.5); beta: KL weight (0.3).
    Returns:
        ``(policy_term, kl_term, frac_pos)``: the two D± sums, ``β/N Σ KL``, and |D+| / N.
    """
    pos = (advantage >= 0).float()
    neg = 1.0 - pos
    n_pos, n_neg = pos.sum(), neg.sum()
    # PMPO (arXiv 2509.24527 eq. 11): L = (1−α)/|D−| Σ_{D−} ln π − α/|D+| Σ_{D+} ln π + β/N Σ KL;
    # an empty set contributes 0 (its sum is 0 and the count is clamped to 1).
    term_neg = (1 - alpha) * (neg * logp).sum() / n_neg.clamp_min(1.0)
    term_pos = alpha * (pos * logp).sum() / n_pos.clamp_min(1.0)
    kl_term = beta * kl.mean()
    return term_neg - term_pos, kl_term, pos.mean()


def frozen_prior(policy: PolicyHead) -> PolicyHead:
    """A frozen copy of a (trained) policy head, used as the behavioural prior."""
    prior = copy.deepcopy(policy)
    prior.requires_grad_(False)
    prior.eval()
    return prior


def _is_untrained(policy: PolicyHead) -> bool:
    return bool((policy.out.weight == 0).all() and (policy.out.bias == 0).all())


class PMPOLoss(LossModule):
    """PMPO policy loss + two-hot value loss toward TD(λ) returns.

    Args:
        heads: agent heads with a value head (added if missing); only ``heads.policy`` and
            ``heads.value`` receive gradients (see :meth:`trainable_parameters`).
        prior: the frozen behavioural prior; by default a frozen copy of ``heads.policy`` taken now,
            so build the loss *after* loading the trained phase-2 heads.
        mtp_distance: the MTP distance n the policy acts with; prior and policy both use it.
        alpha, beta: PMPO weights (0.5, 0.3).
        gamma, lmbda: TD(λ) discount and λ (0.997, 0.95).
        allow_untrained_prior: permit an all-zero (untrained) prior head; off by default because a
            KL toward an untrained head pulls the policy to uniform instead of toward behaviour.

    Example:
        >>> loss = PMPOLoss(heads)  # heads loaded from a phase-2 run
        >>> out = loss(rollout_td)
        >>> total = out["loss_policy"] + out["loss_kl"] + out["loss_value"]
    """

    @dataclass
    class _AcceptedKeys:
        features: str = "agent_features"
        action: str = "action"
        reward: str = "reward"
        cont: str = "continue"
        terminated: str = "terminated"
        done: str = "done"

    def __init__(
        self,
        heads: AgentHeads,
        prior: PolicyHead | None = None,
        mtp_distance: int = 0,
        alpha: float = 0.5,
        beta: float = 0.3,
        gamma: float = GAMMA,
        lmbda: float = LAMBDA,
        allow_untrained_prior: bool = False,
    ) -> None:
        super().__init__()
        heads.add_value_head()
        self.heads = heads
        if prior is None:
            prior = frozen_prior(heads.policy)
        if _is_untrained(prior) and not allow_untrained_prior:
            raise ValueError(
                "the behavioural prior is an untrained (all-zero) policy head; load the trained "
                "phase-2 heads before building PMPOLoss, or pass allow_untrained_prior=True"
            )
        if not 0 <= mtp_distance <= heads.config.mtp:
            raise ValueError(f"mtp_distance must be in 0..{heads.config.mtp}, got {mtp_distance}")
        self.prior = prior.requires_grad_(False)
        self.mtp_distance = mtp_distance
        self.alpha, self.beta = float(alpha), float(beta)
        self.gamma, self.lmbda = float(gamma), float(lmbda)
        self.in_keys = [
            self.tensor_keys.features,
            self.tensor_keys.action,
            ("next", self.tensor_keys.features),
            ("next", self.tensor_keys.reward),
        ]
        self.out_keys = ["loss_policy", "loss_kl", "loss_value"]

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters phase 3 optimises: the policy and value heads only."""
        assert self.heads.value is not None
        return [*self.heads.policy.parameters(), *self.heads.value.parameters()]

    def _continues(self, td: TensorDictBase, shape: torch.Size) -> Tensor:
        k = self.tensor_keys
        nxt = td.get("next")
        cont, term = nxt.get(k.cont, None), nxt.get(k.terminated, None)
        if cont is not None:
            c = cont.float()
        elif term is not None:
            c = 1.0 - term.float()
        else:
            raise KeyError(
                f'PMPOLoss needs ("next", "{k.cont}") or ("next", "{k.terminated}") in the rollout'
            )
        return c.reshape(shape)

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        k = self.tensor_keys
        feats = tensordict.get(k.features)
        next_feats = tensordict.get(("next", k.features))
        action = join_action(tensordict.get(k.action))
        b, horizon = feats.shape[:2]
        reward = tensordict.get(("next", k.reward)).float().reshape(b, horizon)
        cont = self._continues(tensordict, torch.Size((b, horizon)))
        feats, next_feats = feats.detach(), next_feats.detach()  # the world model is frozen

        value_head = self.heads.value
        assert value_head is not None
        v_logits = value_head(feats)  # [b, H, k]
        v = value_head.twohot.decode(v_logits)  # [b, H]
        with torch.no_grad():
            v_next = value_head.predict(next_feats)  # [b, H]
            values = torch.cat((v[:, :1].detach(), v_next), dim=1)  # v(s_0) .. v(s_H)
            done = tensordict.get(
                ("next", k.done), None
            )  # resets cut the λ-return (TorchRL semantics)
            done = None if done is None else done.reshape(b, horizon)
            ret = td_lambda_returns(
                reward, cont, values, self.gamma, self.lmbda, dones=done
            )  # [b, H]
            adv = ret - v.detach()  # A_t = R^λ_t − v(s_t)

        n = self.mtp_distance
        dist: ActionDist = self.heads.policy(feats, n)
        with torch.no_grad():
            prior_dist: ActionDist = self.prior(feats, n)
        logp = dist.log_prob(action)  # [b, H]
        kl = dist.kl(prior_dist)  # reverse KL[π_θ ‖ π_prior], [b, H]
        loss_policy, loss_kl, frac_pos = pmpo_policy_loss(
            logp.reshape(-1), adv.reshape(-1), kl.reshape(-1), self.alpha, self.beta
        )
        # value: two-hot cross-entropy toward sg(R^λ_t) (DreamerV4 §3.4, arXiv 2509.24527)
        loss_value = value_head.loss(v_logits, ret).mean()

        return TensorDict(
            {
                "loss_policy": loss_policy,
                "loss_kl": loss_kl,
                "loss_value": loss_value,
                "kl": kl.detach().mean(),
                "frac_pos": frac_pos.detach(),
                "advantage": adv.mean(),
                "return": ret.mean(),
                "value": v.detach().mean(),
                "entropy": dist.entropy().detach().mean(),
            },
            batch_size=[],
        )
