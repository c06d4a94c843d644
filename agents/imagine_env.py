"""Imagined rollouts for phase 3: dataset contexts, the imagination env and the TorchRL collector (SPEC §7).

One imagined rollout per dataset context: every optimiser step draws ``N`` context windows (latents +
actions) from the tokenized dataset (or the world model's stored start clips), restarts the ``N``
dreams of a natively batched :class:`~lol_dreamer.envs.torchrl_env.DreamTorchEnv` from them and lets
the policy act for ``H`` steps. The rollout is collected by a TorchRL ``Collector`` with
``frames_per_batch = N·H`` and ``reset_at_each_iter=True``, so each batch is exactly one ``[N, H]``
block of fresh rollouts.

Imagination never stops a dream early: the continue head's probability ``c_{t+1}`` is reported as
``("next", "continue")`` and discounts the TD(λ) return instead (DreamerV4 §3.4, arXiv 2509.24527),
so ``terminated`` stays False and the rollout keeps its fixed horizon.

Each batch is a pure function of ``(seed, step)`` and the current weights: the contexts come from
``default_rng([seed, step])`` and the dream noise and action sampling are reseeded per step, which
makes resuming exact.

Dimension letters: ``N`` rollouts (contexts), ``H`` horizon, ``C`` context frames, ``n``/``c``
latent tokens / channels, ``d`` agent-feature width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.data import Bounded

from lol_dreamer.envs.torchrl_env import DreamTorchEnv
from lol_dreamer.world_model import WorldModel


@dataclass
class Contexts:
    """``N`` context windows to start dreams from.

    Attributes:
        latents: ``float32 [N, C, n, c]``.
        actions: ``int64 [N, C, 9]`` in stored alignment (``actions[:, t]`` taken after frame t).
        labeled: ``bool [N, C]`` which actions are known.
    """

    latents: Tensor
    actions: Tensor
    labeled: Tensor


class ContextSource(Protocol):
    """``contexts(index) -> Contexts``: the ``index``-th block of ``N`` contexts (deterministic)."""

    num: int
    length: int

    def __call__(self, index: int) -> Contexts: ...


def _mix(seed: int, index: int, salt: int) -> int:
    """A 63-bit seed from ``(seed, index, salt)`` (independent streams per step and purpose)."""
    return int(np.random.default_rng([int(seed), int(index), int(salt)]).integers(0, 2**63 - 1))


class DatasetContexts:
    """Uniform random windows of ``length`` frames from a tokenized dataset.

    Args:
        dataset: an opened dataset whose episodes have latents of the world model's tokenizer.
        num: contexts per block (N).
        length: frames per context (C).
        seed: block ``index`` is drawn from ``default_rng([seed, index, 0])``.
    """

    def __init__(self, dataset: Any, num: int, length: int, seed: int = 0) -> None:
        from lol_dreamer.data import SequenceSampler

        self.num, self.length = int(num), int(length)
        self.sampler = SequenceSampler(
            dataset, self.length, self.num, seed=seed, fields=("latents", "actions", "labeled")
        )

    def __call__(self, index: int) -> Contexts:
        b = self.sampler.sample(index)
        return Contexts(b["latents"].float(), b["actions"].long(), b["labeled"].bool())


class StartClipContexts:
    """Contexts drawn from the world model's stored start clips (when no dataset is given).

    Args:
        wm: the world model.
        num: contexts per block (N); clips are drawn without replacement while there are enough.
        length: frames per context (C ≤ the clips' length; the last C frames are used).
        seed: block ``index`` is drawn from ``default_rng([seed, index, 1])``.
    """

    def __init__(self, wm: WorldModel, num: int, length: int | None = None, seed: int = 0) -> None:
        self.starts = wm.starts
        self.num = int(num)
        self.length = int(length or self.starts.context)
        if not 1 <= self.length <= self.starts.context:
            raise ValueError(
                f"the world model's start clips have {self.starts.context} frames; a context of "
                f"{self.length} needs --data (a tokenized dataset) or a shorter --context"
            )
        self.seed = int(seed)

    def __call__(self, index: int) -> Contexts:
        rng = np.random.default_rng([self.seed, int(index), 1])
        n_clips = len(self.starts)
        reps = -(-self.num // n_clips)
        order = np.concatenate([rng.permutation(n_clips) for _ in range(reps)])[: self.num]
        idx = torch.from_numpy(order)
        c = self.length
        return Contexts(
            self.starts.latents[idx, -c:].float(),
            self.starts.actions[idx, -c:].long(),
            torch.ones(self.num, c, dtype=torch.bool),
        )


class ImaginationEnv(DreamTorchEnv):
    """:class:`DreamTorchEnv` for imagination training: restarts from given contexts, never terminates.

    Same specs as the parent (``decode=False``: latents and agent features, no pixels) plus one
    observation; what differs:

    - a full reset restarts every dream from ``contexts(index)`` of the current block
      (:meth:`use_block`) and reseeds the dream noise from ``(seed, index)``;
    - ``("next", "continue")`` ``float32 [N, 1]`` is the continue head's p(episode goes on), read
      from the dream step; like ``("next", "reward")`` it is the distance-0 head on the new frame's
      features, i.e. ``c_{t+1}`` / ``r_{t+1}`` of the transition ``s_t → s_{t+1}`` (SPEC §7);
    - ``terminated`` / ``done`` are always False (imagination discounts by ``continue`` instead).

    Args:
        world_model: the loaded agent world model (dynamics with agent tokens + heads).
        contexts: the context source; its ``num`` is the number of dreams N.
        task: task id the agent tokens are conditioned on.
        seed: base seed of the dream noise.
        steps_per_frame: K (None = the model's).
    """

    def __init__(
        self,
        world_model: WorldModel,
        contexts: ContextSource,
        task: int,
        seed: int = 0,
        steps_per_frame: int | None = None,
    ) -> None:
        if not world_model.has_heads or int(getattr(world_model.dynamics.cfg, "n_agent", 0)) < 1:
            raise ValueError(
                "imagination needs a phase-2 world model (agent tokens + reward/continue heads); "
                "pass a folder written by `lol-dreamer train agent`"
            )
        super().__init__(
            world_model=world_model,
            num_envs=contexts.num,
            task=task,
            decode=False,
            steps_per_frame=steps_per_frame,
        )
        self.contexts = contexts
        self.base_seed = int(seed)
        self.block = 0
        self.full_observation_spec["continue"] = Bounded(
            0.0, 1.0, shape=(self.num_envs, 1), dtype=torch.float32, device=self.device
        )

    def use_block(self, index: int) -> None:
        """The next reset starts the dreams from context block ``index`` with noise seeded by it."""
        self.block = int(index)

    def _set_seed(self, seed: int | None) -> None:
        self.base_seed = int(seed or 0)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDictBase:
        rows = tensordict.get("_reset", None) if tensordict is not None else None
        if rows is not None and not bool(rows.all()) and self.dream.state is not None:
            raise RuntimeError(
                "ImaginationEnv restarts all dreams together (imagined rollouts never terminate); "
                "use a Collector with reset_at_each_iter=True and no max_episode_steps"
            )
        n, dev = self.num_envs, self.device
        ctx = self.contexts(self.block)
        self.dream.seed(_mix(self.base_seed, self.block, 2))
        tasks = torch.full((n,), self.task, dtype=torch.long)
        self.dream.reset(None, ctx.latents, ctx.actions, tasks, ctx.labeled)
        self._elapsed.zero_()
        zeros = torch.zeros(n, 1, dtype=torch.bool, device=dev)
        return TensorDict(
            {
                **self._observation(),
                "continue": torch.ones(n, 1, device=dev),
                "done": zeros,
                "terminated": zeros.clone(),
                "truncated": zeros.clone(),
            },
            batch_size=self.batch_size,
            device=dev,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        n = self.num_envs
        move = tensordict.get(("action", "move")).reshape(n, 1).long()
        keys = tensordict.get(("action", "keys")).reshape(n, -1).long()
        out = self.dream.step(torch.cat((move, keys), dim=1))
        self._elapsed += 1
        zeros = torch.zeros(n, 1, dtype=torch.bool, device=self.device)
        # The step's tensors are fresh (the dream rebinds, never overwrites, its agent features);
        # the latent buffer is written in place by partial resets, so it is copied.
        return TensorDict(
            {
                "latent": out.latent.clone(),
                "task": self.dream.tasks.clone(),
                "agent_features": out.agent_features,
                "reward": out.reward.float()[:, None],
                "continue": out.continue_prob.float()[:, None],
                "done": zeros,
                "terminated": zeros.clone(),
                "truncated": zeros.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )


class ImaginationRollouts:
    """``sample(step)`` → one ``[N, H]`` TensorDict of imagined rollouts, collected by TorchRL.

    Args:
        env: the :class:`ImaginationEnv`.
        actor: an :class:`~lol_dreamer.agents.actor.ImagineActor` (policy head by reference).
        horizon: H.
        seed: base seed of the action sampling.

    The TensorDict has the collector's layout (batch ``[N, H]``, time last): ``agent_features``,
    ``latent``, ``("action", "move" | "keys")`` and under ``"next"`` the same
    observations plus ``reward`` ``[N, H, 1]``, ``continue`` ``[N, H, 1]`` and the done flags.
    """

    def __init__(self, env: ImaginationEnv, actor: Any, horizon: int, seed: int = 0) -> None:
        from torchrl.collectors import Collector

        if horizon < 1:
            raise ValueError(f"the horizon must be at least 1 step, got {horizon}")
        self.env, self.actor = env, actor
        self.horizon = int(horizon)
        self.seed = int(seed)
        self.collector = Collector(
            env,
            policy=actor.module,
            frames_per_batch=env.num_envs * self.horizon,
            total_frames=-1,
            reset_at_each_iter=True,
            device=env.device,
            auto_register_policy_transforms=False,
            # every row of a batch is one whole trajectory, so trajectory ids are redundant; not
            # tracking them saves ~0.9 ms of TensorDict work per step (benchmarks/bench_collector.py)
            track_traj_ids=False,
        )
        self._iter = iter(self.collector)

    def prepare(self, step: int) -> None:
        """Point the env at context block ``step`` and reseed the action sampling for it."""
        self.env.use_block(step)
        self.actor.reseed(_mix(self.seed, step, 3))

    @torch.no_grad()
    def sample(self, step: int) -> TensorDictBase:
        """The rollouts of optimiser step ``step`` (a pure function of seed, step and the weights)."""
        self.prepare(step)
        td = next(self._iter)
        if td.batch_size != torch.Size([self.env.num_envs, self.horizon]):
            raise RuntimeError(
                f"the collector returned a batch of {tuple(td.batch_size)}, expected "
                f"[{self.env.num_envs}, {self.horizon}]"
            )
        return td

    @torch.no_grad()
    def direct(self, step: int) -> dict[str, Tensor]:
        """The same rollouts as :meth:`sample`, driving the env's dream batch directly (no TorchRL).

        Returns:
            ``agent_features [N, H, d]``, ``action [N, H, 9]``, ``next_agent_features [N, H, d]``,
            ``reward [N, H]``, ``continue [N, H]``.
        """
        env = self.env
        self.prepare(step)
        env._reset()
        dream = env.dream
        feats, acts, nxt, rew, cont = [], [], [], [], []
        h = dream.agent_features
        for _ in range(self.horizon):
            a = self.actor.act(h)
            out = dream.step(a)
            feats.append(h)
            acts.append(a)
            h = out.agent_features
            nxt.append(h)
            rew.append(out.reward)
            cont.append(out.continue_prob)
        return {
            "agent_features": torch.stack(feats, 1),
            "action": torch.stack(acts, 1),
            "next_agent_features": torch.stack(nxt, 1),
            "reward": torch.stack(rew, 1),
            "continue": torch.stack(cont, 1),
        }

    def close(self) -> None:
        self.collector.shutdown()
