"""The phase-3 policy and value as TorchRL ``TensorDictModule``s (SPEC §7).

Both read the dream env's ``"agent_features"`` ``[..., d]`` (the mean agent-token output of the
frozen dynamics transformer):

| module                | writes                                                                  |
|-----------------------|-------------------------------------------------------------------------|
| :class:`PolicyModule` | ``("action", "move")`` ``[...]``, ``("action", "keys")`` ``[..., 8]``      |
| :func:`value_module`  | ``"state_value"`` ``[..., 1]`` (the two-hot value head's expectation)     |

The actor samples from the policy head at one MTP distance with its own ``torch.Generator`` so a
rollout is a pure function of the seed it is given (:meth:`ImagineActor.reseed`); the collector
calls it under ``torch.no_grad`` and the PMPO loss recomputes log-probabilities with gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor, nn

from lol_dreamer.models.heads import AgentHeads, ValueHead
from lol_dreamer.policy import Policy


class ImagineActor:
    """The policy head at MTP distance ``mtp_distance`` as a TorchRL actor over ``agent_features``.

    Args:
        heads: agent heads; ``heads.policy`` is used by reference, so optimiser updates are seen
            by the next rollout without any weight copy.
        mtp_distance: the policy output layer that acts (the one the prior is taken at).
        seed: initial seed of the action sampling.

    Example:
        >>> actor = ImagineActor(heads, mtp_distance=0)          # doctest: +SKIP
        >>> td = actor.module(env.reset())                        # doctest: +SKIP
        >>> td["action", "move"].shape, td["action", "keys"].shape  # doctest: +SKIP
    """

    def __init__(self, heads: AgentHeads, mtp_distance: int = 0, seed: int = 0) -> None:
        self.policy = Policy(heads, None, mtp_distance=mtp_distance, seed=seed)
        self.module = PolicyModule(self.policy)

    @property
    def generator(self) -> torch.Generator:
        return self.policy.generator

    @property
    def mtp_distance(self) -> int:
        return self.policy.mtp_distance

    def reseed(self, seed: int) -> None:
        """Restart the action-sampling stream at ``seed``."""
        self.policy.generator.manual_seed(int(seed) % (2**63))

    def act(self, h: Tensor) -> Tensor:
        """Sample actions ``int64 [..., 9]`` for features ``h [..., d]`` (no gradient)."""
        return self.policy.act_features(h)


class PolicyModule(TensorDictModuleBase):
    """``agent_features [N, d]`` → ``("action", "move") [N]`` and ``("action", "keys") [N, 8]``,
    sampled from :class:`~lol_dreamer.policy.Policy` (its generator).

    No log-probability is stored: the PMPO loss recomputes ``ln π(a|s)`` with gradients from the
    features, so computing it during collection would be wasted work on every step.

    Writes straight into the input TensorDict: a plain ``TensorDictModule`` converts every output
    through ``TensorDict.from_any``, which costs an import-system lookup per tensor per step and
    was the largest single TorchRL overhead of a collector step (benchmarks/bench_collector.py).

    Args:
        policy: the policy (head at one MTP distance + sampling generator).
    """

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy
        self.heads = policy.heads
        self.in_keys = ["agent_features"]
        self.out_keys = [("action", "move"), ("action", "keys")]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        with torch.no_grad():
            a = self.policy.act_features(tensordict.get("agent_features"))
        tensordict.set(("action", "move"), a[..., 0])
        tensordict.set(("action", "keys"), a[..., 1:])
        return tensordict


class _ValueNet(nn.Module):
    def __init__(self, value: ValueHead) -> None:
        super().__init__()
        self.value = value

    def forward(self, h: Tensor) -> Tensor:
        return self.value.predict(h.float())[..., None]


def value_module(
    value: ValueHead, in_key: str = "agent_features", out_key: str = "state_value"
) -> Any:
    """The value head as a ``TensorDictModule``: ``in_key [..., d]`` → ``out_key [..., 1]``.

    This is the ``value_network`` TorchRL's value estimators (``TDLambdaEstimator``) expect.

    Args:
        value: the (two-hot) value head.
        in_key: features key.
        out_key: value key.
    """
    from tensordict.nn import TensorDictModule

    return TensorDictModule(_ValueNet(value), in_keys=[in_key], out_keys=[out_key])
