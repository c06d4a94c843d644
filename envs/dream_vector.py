"""``DreamVectorEnv``: N dreams stepped as one batch on one device, a native ``gymnasium.vector.VectorEnv``.

Reached through ``gym.make_vec("LoLDream-v0", num_envs=N, vectorization_mode="vector_entry_point",
checkpoint=...)``. No process or Python loop per env: the sampler, the decoder and the heads all run
on the ``[N, ...]`` batch, and finished dreams restart in place (partial resets of the KV cache and
of the decoder history).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from lol_dreamer.actions import TASKS, action_space
from lol_dreamer.envs.dream import NO_REWARD, REWARD_HEAD, resolve_task
from lol_dreamer.envs.dream_batch import DreamStep
from lol_dreamer.envs.dream_shards import make_dream_batch
from lol_dreamer.world_model import WorldModel, load_world_model


class DreamVectorEnv(VectorEnv):
    """``num_envs`` dreams of one world model as a single batch.

    Spaces, rewards and episode ends are those of :class:`lol_dreamer.envs.dream.DreamEnv`, batched:
    observations ``uint8 [N, H, W, 3]`` (or latents ``float32 [N, n_z, d_z]`` with ``decode=False``),
    actions ``int64 [N, 9]``, rewards ``float64 [N]``, terminations / truncations ``bool [N]``.

    | autoreset mode | what happens to an env that finished at step t                                    |
    |----------------|-----------------------------------------------------------------------------------|
    | ``NEXT_STEP``  | step t+1 ignores its action and returns its reset observation, reward 0, flags False |
    | ``SAME_STEP``  | step t returns the reset observation; the last one is in ``info["final_obs"]``      |
    | ``DISABLED``   | the caller resets it with ``reset(options={"reset_mask": mask})`` before stepping   |

    ``reset(options={"reset_mask": bool [N]})`` restarts only the masked envs in every mode. Infos hold
    ``continue_prob`` ``float32 [N]`` and ``task`` ``int64 [N]`` (with ``_``-prefixed masks).

    Args:
        num_envs: N.
        checkpoint: world-model folder (None = the bundled default).
        device: torch device.
        steps_per_frame: K (None = the model's).
        context_length: frames in the KV cache (None = the model's).
        task: fixed task for every env (None = each start clip's task).
        render_mode: ``"rgb_array"`` or None.
        max_episode_steps: truncate each episode after this many steps.
        autoreset_mode: an :class:`AutoresetMode` or its string value.
        decode: decode frames (False: observations are latents and no decoder runs).
        torch_threads: torch intra-op threads to set (None = leave alone).
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

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["rgb_array"],
        "render_fps": 20,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        checkpoint: str | None = None,
        device: str = "cpu",
        steps_per_frame: int | None = None,
        context_length: int | None = None,
        task: str | int | None = None,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        decode: bool = True,
        torch_threads: int | None = None,
        world_model: WorldModel | None = None,
        dtype: str | torch.dtype | None = None,
        decode_dtype: str | torch.dtype | None = "auto",
        shards: int | str | None = "auto",
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"DreamVectorEnv renders only 'rgb_array', got {render_mode!r}")
        if render_mode == "rgb_array" and not decode:
            raise ValueError("render_mode='rgb_array' needs decode=True")
        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        self.wm = (
            world_model if world_model is not None else load_world_model(checkpoint, device=device)
        )
        self.num_envs = int(num_envs)
        self.autoreset_mode = (
            autoreset_mode
            if isinstance(autoreset_mode, AutoresetMode)
            else AutoresetMode(autoreset_mode)
        )
        self.metadata = {
            **self.metadata,
            "autoreset_mode": self.autoreset_mode,
            "render_fps": self.wm.fps,
        }
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.task = resolve_task(task)
        self.decode = decode
        self.batch = make_dream_batch(
            self.wm,
            self.num_envs,
            k=steps_per_frame,
            context_length=context_length,
            decode=decode,
            dtype=dtype,
            decode_dtype=decode_dtype,
            shards=shards,
        )
        self.reward_source = REWARD_HEAD if self.wm.has_heads else NO_REWARD
        res = self.wm.res
        if decode:
            self.single_observation_space = spaces.Box(0, 255, (res, res, 3), np.uint8)
        else:
            # Generated latents are x-predictions, not tanh outputs: they may leave (-1, 1).
            self.single_observation_space = spaces.Box(
                -np.inf, np.inf, (self.wm.n_z, self.wm.d_z), np.float32
            )
        self.single_action_space = action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._obs: np.ndarray | None = None
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._tasks = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=np.bool_)

    # -------------------------------------------------------------------------------------------

    def _observe(self, out_frames: torch.Tensor | None, latent: torch.Tensor) -> np.ndarray:
        if self.decode:
            return out_frames.cpu().numpy()
        return latent.float().cpu().numpy().astype(np.float32)

    def _restart(self, rows: np.ndarray) -> np.ndarray:
        """Restart envs ``rows`` (bool ``[N]``) from seeded start clips; returns their first observations."""
        starts = self.wm.starts
        m = int(rows.sum())
        index = self.np_random.integers(len(starts), size=m)
        tasks = (
            starts.tasks[index].numpy()
            if self.task is None
            else np.full(m, self.task, dtype=np.int64)
        )
        mask = torch.from_numpy(rows)
        frames = self.batch.reset(
            mask,
            starts.latents[index].float(),
            starts.actions[index],
            torch.from_numpy(tasks).long(),
        )
        self._tasks[rows] = tasks
        self._elapsed[rows] = 0
        idx = torch.from_numpy(np.flatnonzero(rows))
        return self._observe(frames, self.batch.latent[idx])

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env, or only ``options["reset_mask"]`` (bool ``[N]``).

        Args:
            seed: an int (or a list of ints, combined) seeding start-clip choice and sampler noise.
            options: ``reset_mask`` (bool numpy ``[N]``) to restart only some envs.
        Returns:
            ``(observations, infos)``.
        """
        if isinstance(seed, (list, tuple)):
            ints = [int(s) for s in seed if s is not None]
            seed = int(np.random.SeedSequence(ints).generate_state(1)[0]) if ints else None
        if seed is not None or self._np_random is None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        options = options or {}
        mask = options.get("reset_mask")
        if mask is None or self._obs is None:
            mask = np.ones(self.num_envs, dtype=np.bool_)
            self.batch.seed(int(self.np_random.integers(0, 2**63 - 1)))
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a numpy bool array of shape ({self.num_envs},), got {mask.dtype} {mask.shape}"
                )
            if not mask.any():
                raise ValueError("options['reset_mask'] must select at least one env")
        first = self._restart(mask)
        if self._obs is None or mask.all():
            self._obs = first
        else:
            self._obs = self._obs.copy()
            self._obs[mask] = first
        self._autoreset[mask] = False
        return self._obs.copy(), self._info(mask)

    def _info(self, rows: np.ndarray, step: DreamStep | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {"task": self._tasks.copy(), "_task": rows.copy()}
        if step is not None:
            info["continue_prob"] = step.continue_prob.float().cpu().numpy()
            info["_continue_prob"] = rows.copy()
        return info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all envs with ``actions`` ``int [N, 9]`` (see the class docstring for autoreset)."""
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(actions)
        if a.shape != (self.num_envs, 9):
            raise ValueError(
                f"actions must be int [{self.num_envs}, 9] = [movement, 8 keys] per env, got {a.shape}"
            )
        if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset.any():
            raise RuntimeError(
                f"envs {np.flatnonzero(self._autoreset).tolist()} finished; with autoreset_mode=DISABLED "
                "call reset(options={'reset_mask': mask}) for them before stepping"
            )
        out = self.batch.step(torch.from_numpy(a.astype(np.int64)))
        self._elapsed += 1
        obs = self._observe(out.frames, out.latent)
        rewards = out.reward.double().cpu().numpy()
        terminated = (
            (out.continue_prob < 0.5).cpu().numpy()
            if self.wm.has_heads
            else np.zeros(self.num_envs, np.bool_)
        )
        if self.max_episode_steps is not None:
            truncated = self._elapsed >= self.max_episode_steps
        else:
            truncated = np.zeros(self.num_envs, dtype=np.bool_)
        everyone = np.ones(self.num_envs, dtype=np.bool_)
        info = self._info(everyone, out)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._autoreset.any():
            rows = self._autoreset.copy()
            obs[rows] = self._restart(rows)
            rewards[rows] = 0.0
            terminated[rows] = False
            truncated[rows] = False
            info["task"] = self._tasks.copy()
        done = terminated | truncated
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = obs[i].copy()
            info["final_obs"], info["_final_obs"] = final_obs, done.copy()
            info["final_info"] = {
                "continue_prob": info["continue_prob"].copy(),
                "_continue_prob": done.copy(),
                "task": self._tasks.copy(),
                "_task": done.copy(),
            }
            info["_final_info"] = done.copy()
            obs[done] = self._restart(done)
            info["task"] = self._tasks.copy()
        self._autoreset = done.copy()
        self._obs = obs
        return obs.copy(), rewards, terminated.astype(np.bool_), truncated.astype(np.bool_), info

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array" or self._obs is None:
            return None
        return tuple(frame.copy() for frame in self._obs)

    @property
    def tasks(self) -> list[str]:
        """Task name of each env's current episode."""
        return [TASKS[t] for t in self._tasks]

    def close_extras(self, **kwargs: Any) -> None:
        self.batch.close()
