"""``DreamTorchEnv``: N dreams as one natively batched TorchRL ``EnvBase`` (SPEC §2, §7, §8).

Phase-3 imagination training drives this env with a TorchRL ``Collector``; nothing on the step path
loops over envs in Python, and with ``decode=False`` no frame is decoded at all.

Example:
    >>> from torchrl.collectors import Collector
    >>> env = DreamTorchEnv("runs/agent", num_envs=64, decode=False)   # doctest: +SKIP
    >>> collector = Collector(env, policy=None, frames_per_batch=640, total_frames=6400)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from lol_dreamer.actions import N_KEYS, N_MOVE, TASKS
from lol_dreamer.envs.dream import resolve_task
from lol_dreamer.envs.dream_shards import make_dream_batch
from lol_dreamer.world_model import WorldModel, load_world_model


class DreamTorchEnv(EnvBase):
    """``num_envs`` dreams of one world model, batch size ``[N]``.

    | key                           | spec                                   | when                         |
    |-------------------------------|----------------------------------------|------------------------------|
    | ``("action", "move")``        | ``Categorical(19)`` ``[N]``            | always (18 = stand)          |
    | ``("action", "keys")``        | ``Binary(8)`` ``[N, 8]`` (Q W E R D F item B) | always                |
    | ``pixels``                    | ``uint8 [N, H, W, 3]``                 | ``decode=True``              |
    | ``latent``                    | ``float32 [N, n_z, d_z]``              | always                       |
    | ``agent_features``            | ``float32 [N, d]``                     | the model has agent tokens   |
    | ``task``                      | ``Categorical(3)`` ``[N]``             | always                       |
    | ``reward``                    | ``float32 [N, 1]``: reward head (0 without heads) | always            |
    | ``done`` / ``terminated`` / ``truncated`` | ``bool [N, 1]``: continue head p < 0.5 / ``max_episode_steps`` | always |

    Partial resets: ``reset(TensorDict({"_reset": mask [N, 1]}))`` restarts only the masked dreams
    (collectors do this for finished envs).

    Args:
        checkpoint: world-model folder (None = the bundled default).
        num_envs: N.
        device: torch device (the env's and the world model's).
        steps_per_frame: K (None = the model's).
        context_length: frames in the KV cache (None = the model's).
        task: fixed task (None = each start clip's task).
        decode: decode ``pixels`` each step (False for imagination training).
        max_episode_steps: truncate after this many steps (None = never).
        world_model: an already loaded :class:`WorldModel` (overrides ``checkpoint``).
        dtype: dynamics compute dtype, ``"float32"`` (default) or ``"bfloat16"`` (autocast; pays
            off for large batches on a CPU with native bf16 and on GPUs).
        decode_dtype: decoder compute dtype, ``"auto"`` (default: bf16 for a CNN tokenizer on a CPU
            with native bf16, else fp32; see ``envs/dream_batch.resolve_decode_dtype``),
            ``"float32"`` or ``"bfloat16"``.
        shards: split the N dreams into this many shards stepped in parallel, one CPU core and
            one intra-op thread each (:mod:`lol_dreamer.envs.dream_shards`); ``"auto"`` (default) =
            one per usable core with at least 16 dreams each (so below 32 dreams, or off the CPU,
            one batch); 1 = always one batch. The dream depends on the shard count: pass an int
            to get the same dream from a seed on machines with different core counts.
    """

    batch_locked = True

    def __init__(
        self,
        checkpoint: str | None = None,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        steps_per_frame: int | None = None,
        context_length: int | None = None,
        task: str | int | None = None,
        decode: bool = True,
        max_episode_steps: int | None = None,
        world_model: WorldModel | None = None,
        dtype: str | torch.dtype | None = None,
        decode_dtype: str | torch.dtype | None = "auto",
        shards: int | str | None = "auto",
    ) -> None:
        wm = world_model if world_model is not None else load_world_model(checkpoint, device=device)
        super().__init__(device=wm.device, batch_size=torch.Size([num_envs]))
        self.wm = wm
        self.num_envs = num_envs
        self.decode = decode
        self.task = resolve_task(task)
        self.max_episode_steps = max_episode_steps
        self.dream = make_dream_batch(
            wm,
            num_envs,
            k=steps_per_frame,
            context_length=context_length,
            decode=decode,
            dtype=dtype,
            decode_dtype=decode_dtype,
            shards=shards,
        )
        self._rng = np.random.default_rng(0)
        self._elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._pixels: torch.Tensor | None = None
        self._make_specs()

    def _make_specs(self) -> None:
        n, dev, wm = self.num_envs, self.device, self.wm
        self.full_action_spec = Composite(
            action=Composite(
                move=Categorical(N_MOVE, shape=(n,), device=dev),
                keys=Binary(N_KEYS, shape=(n, N_KEYS), device=dev),
                shape=(n,),
                device=dev,
            ),
            shape=(n,),
            device=dev,
        )
        obs = {
            "latent": Unbounded(shape=(n, wm.n_z, wm.d_z), dtype=torch.float32, device=dev),
            "task": Categorical(len(TASKS), shape=(n,), device=dev),
        }
        if self.decode:
            obs["pixels"] = Bounded(
                0, 255, shape=(n, wm.res, wm.res, 3), dtype=torch.uint8, device=dev
            )
        dyn_cfg = getattr(self.dream.sampler.model, "cfg", None)
        self._has_agent = bool(dyn_cfg is not None and getattr(dyn_cfg, "n_agent", 0))
        if self._has_agent:
            obs["agent_features"] = Unbounded(
                shape=(n, dyn_cfg.dim), dtype=torch.float32, device=dev
            )
        self.full_observation_spec = Composite(obs, shape=(n,), device=dev)
        self.full_reward_spec = Composite(
            reward=Unbounded(shape=(n, 1), dtype=torch.float32, device=dev), shape=(n,), device=dev
        )
        self.full_done_spec = Composite(
            done=Categorical(2, shape=(n, 1), dtype=torch.bool, device=dev),
            terminated=Categorical(2, shape=(n, 1), dtype=torch.bool, device=dev),
            truncated=Categorical(2, shape=(n, 1), dtype=torch.bool, device=dev),
            shape=(n,),
            device=dev,
        )

    # -------------------------------------------------------------------------------------------

    def _set_seed(self, seed: int | None) -> None:
        self._rng = np.random.default_rng(seed)
        self.dream.seed(int(self._rng.integers(0, 2**63 - 1)))

    def _observation(self) -> dict[str, torch.Tensor]:
        obs = {"latent": self.dream.latent.clone(), "task": self.dream.tasks.clone()}
        if self.decode:
            obs["pixels"] = self._pixels.clone()
        if self._has_agent:
            obs["agent_features"] = self.dream.agent_features.clone()
        return obs

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        n, dev = self.num_envs, self.device
        rows = tensordict.get("_reset", None) if tensordict is not None else None
        if rows is not None:
            rows = rows.reshape(n).to(dev, torch.bool)
        if rows is None or self.dream.state is None:
            rows = torch.ones(n, dtype=torch.bool, device=dev)
        m = int(rows.sum())
        if m:
            starts = self.wm.starts
            index = torch.from_numpy(self._rng.integers(len(starts), size=m))
            tasks = (
                starts.tasks[index]
                if self.task is None
                else torch.full((m,), self.task, dtype=torch.long)
            )
            frames = self.dream.reset(
                rows, starts.latents[index].float(), starts.actions[index], tasks
            )
            if self.decode:
                if self._pixels is None:
                    self._pixels = torch.zeros(
                        n, self.wm.res, self.wm.res, 3, dtype=torch.uint8, device=dev
                    )
                self._pixels[rows] = frames
            self._elapsed[rows] = 0
        zeros = torch.zeros(n, 1, dtype=torch.bool, device=dev)
        return TensorDict(
            {
                **self._observation(),
                "done": zeros.clone(),
                "terminated": zeros.clone(),
                "truncated": zeros.clone(),
            },
            batch_size=self.batch_size,
            device=dev,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        move = tensordict.get(("action", "move")).reshape(self.num_envs, 1).long()
        keys = tensordict.get(("action", "keys")).reshape(self.num_envs, N_KEYS).long()
        out = self.dream.step(torch.cat((move, keys), dim=1))
        if self.decode:
            self._pixels = out.frames
        self._elapsed += 1
        if self.wm.has_heads:
            terminated = (out.continue_prob < 0.5)[:, None]
        else:
            terminated = torch.zeros(self.num_envs, 1, dtype=torch.bool, device=self.device)
        if self.max_episode_steps is not None:
            truncated = (self._elapsed >= self.max_episode_steps)[:, None]
        else:
            truncated = torch.zeros_like(terminated)
        return TensorDict(
            {
                **self._observation(),
                "reward": out.reward.float()[:, None],
                "done": terminated | truncated,
                "terminated": terminated,
                "truncated": truncated,
            },
            batch_size=self.batch_size,
            device=self.device,
        )
