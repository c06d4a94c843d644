"""``LoLDream-v0``: the learned world model behind a Gymnasium ``Env`` (SPEC §8)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from lol_dreamer.actions import TASK_INDEX, TASKS, action_space, check_action
from lol_dreamer.envs.dream_batch import DreamBatch
from lol_dreamer.world_model import WorldModel, load_world_model

REWARD_HEAD = "reward_head"
NO_REWARD = "none: this world model has no reward head (train it with `lol-dreamer train agent`); reward is 0"


def resolve_task(task: str | int | None) -> int | None:
    """A task name or id → task id (``None`` stays ``None``); a clear error for anything else."""
    if task is None:
        return None
    if isinstance(task, str):
        if task not in TASK_INDEX:
            raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
        return TASK_INDEX[task]
    t = int(task)
    if not 0 <= t < len(TASKS):
        raise ValueError(f"task id must be in 0..{len(TASKS) - 1} ({TASKS}), got {task}")
    return t


def start_from_options(
    wm: WorldModel, options: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``options["start"]`` (+ optional ``options["actions"]``) → ``(latents [1, C, n, c], actions [1, C, 9], labeled [1, C])``.

    ``start`` is either frames ``uint8 [C, H, W, 3]`` (encoded with the world model's tokenizer) or
    latents ``float [C, n_z, d_z]``; ``actions`` is ``int [C, 9]`` in episode alignment (row t taken
    after frame t). Without actions the context is unlabeled.
    """
    start = torch.as_tensor(np.asarray(options["start"]))
    if start.dtype == torch.uint8 and start.ndim == 4 and start.shape[-1] == 3:
        latents = wm.encode_frames(start[None])
    elif (
        start.is_floating_point() and start.ndim == 3 and tuple(start.shape[1:]) == (wm.n_z, wm.d_z)
    ):
        latents = start[None].float()
    else:
        raise ValueError(
            f"options['start'] must be frames uint8 [C, {wm.res}, {wm.res}, 3] or latents float "
            f"[C, {wm.n_z}, {wm.d_z}], got {start.dtype} {tuple(start.shape)}"
        )
    c = latents.shape[1]
    if options.get("actions") is None:
        actions = torch.zeros(1, c, 9, dtype=torch.long)
        actions[..., 0] = 18
        labeled = torch.zeros(1, c, dtype=torch.bool)
    else:
        actions = torch.as_tensor(np.asarray(options["actions"])).long()
        if tuple(actions.shape) != (c, 9):
            raise ValueError(
                f"options['actions'] must be int [{c}, 9] to match the {c} start frames, got {tuple(actions.shape)}"
            )
        actions = actions[None]
        labeled = torch.ones(1, c, dtype=torch.bool)
    return latents, actions, labeled


class DreamEnv(gym.Env[np.ndarray, np.ndarray]):
    """A LoL lane dreamed by a DreamerV4 world model, one frame per step.

    Each ``step`` takes the action, runs K shortcut denoising steps of the dynamics transformer with a
    KV cache of the last ``context_length`` frames, and decodes the new frame with the streaming
    tokenizer decoder. Episodes start from held-out real clips stored in the world model.

    ## Action space

    ``MultiDiscrete([19, 2, 2, 2, 2, 2, 2, 2, 2])`` (int64), the same as ``LoLLane-v0``:

    | index | name     | values                                                                 |
    |-------|----------|------------------------------------------------------------------------|
    | 0     | movement | 0..17: move toward k·20° (0° = screen right, counter-clockwise); 18: stand |
    | 1..8  | keys     | Q, W, E, R, D, F, item, B: 0/1 pressed this frame                      |

    ## Observation space

    ``Box(0, 255, (H, W, 3), uint8)``: the decoded RGB frame at the model's resolution.

    ## Rewards

    | world model           | reward                                                    | ``info["reward_source"]`` |
    |-----------------------|-----------------------------------------------------------|---------------------------|
    | with agent heads      | the reward head (MTP distance 0) on the new frame's agent features, whose tokens carry the episode's task | ``"reward_head"`` |
    | dynamics only         | 0                                                         | ``"none: …"``              |

    ## Starting state

    ``reset`` picks a start clip (``np_random``) from the world model's held-out clips, or uses
    ``options["start"]``: frames ``uint8 [C, H, W, 3]`` or latents ``[C, n_z, d_z]``, with optional
    ``options["actions"]`` ``int [C, 9]`` and ``options["task"]``. The first observation is the decoded
    last context frame.

    ## Episode end

    | condition                                              | flag         |
    |--------------------------------------------------------|--------------|
    | the continue head says p(continue) < 0.5 (agent heads) | ``terminated`` |
    | ``max_episode_steps`` steps taken                      | ``truncated``  |

    ## Arguments

    | argument            | default | meaning                                                        |
    |---------------------|---------|----------------------------------------------------------------|
    | ``checkpoint``      | None    | world-model folder (None = the bundled default model)           |
    | ``device``          | "cpu"   | torch device                                                   |
    | ``steps_per_frame`` | None    | K denoising steps per frame (None = the model's, 4)             |
    | ``context_length``  | None    | frames in the KV cache (None = the model's)                     |
    | ``task``            | None    | "farm" / "fight" / "push" or id; None = the start clip's task   |
    | ``render_mode``     | None    | "rgb_array" or "human" (pygame window)                         |
    | ``max_episode_steps`` | None  | truncate after this many steps                                  |
    | ``world_model``     | None    | an already loaded ``WorldModel`` (overrides ``checkpoint``; shares weights between envs) |
    | ``dtype``           | None    | dynamics compute dtype: "float32" (default) or "bfloat16" (autocast; pays off for large batches or GPUs) |
    | ``decode_dtype``    | "auto"  | decoder compute dtype: "auto" = bf16 for a CNN tokenizer on a CPU with native bf16 (frames within a few 8-bit levels of fp32), else fp32; or "float32" / "bfloat16" |
    | ``torch_threads``   | 1       | torch intra-op threads set at construction (batch-1 inference is usually fastest on 1 thread of a busy CPU); None leaves the setting alone |

    All randomness (start-clip choice, sampler noise) comes from ``np_random``: the same seed gives the
    same dream on the same device.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "human"], "render_fps": 20}

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str = "cpu",
        steps_per_frame: int | None = None,
        context_length: int | None = None,
        task: str | int | None = None,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        torch_threads: int | None = 1,
        world_model: WorldModel | None = None,
        dtype: str | torch.dtype | None = None,
        decode_dtype: str | torch.dtype | None = "auto",
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        self.wm = (
            world_model if world_model is not None else load_world_model(checkpoint, device=device)
        )
        self.task = resolve_task(task)
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.batch = DreamBatch(
            self.wm,
            1,
            k=steps_per_frame,
            context_length=context_length,
            decode=True,
            dtype=dtype,
            decode_dtype=decode_dtype,
        )
        self.res = self.wm.res
        self.context_length = self.batch.context_length
        self.metadata = {**self.metadata, "render_fps": self.wm.fps}
        self.observation_space = spaces.Box(0, 255, (self.res, self.res, 3), np.uint8)
        self.action_space = action_space()
        self.reward_source = REWARD_HEAD if self.wm.has_heads else NO_REWARD
        self._frame: np.ndarray | None = None
        self._elapsed = 0
        self._episode_task = 0
        self._window = None
        self._clock = None

    @property
    def agent_features(self) -> torch.Tensor | None:
        """Agent-token features ``[d]`` of the current frame (None without agent tokens)."""
        f = self.batch.agent_features
        return None if f is None else f[0].clone()

    @property
    def latent(self) -> torch.Tensor:
        """Latent ``[n_z, d_z]`` of the current frame."""
        return self.batch.latent[0].clone()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        self.batch.seed(int(self.np_random.integers(0, 2**63 - 1)))
        starts = self.wm.starts
        if options.get("start") is not None:
            latents, actions, labeled = start_from_options(self.wm, options)
            index = -1
            task = resolve_task(options.get("task"))
            task = task if task is not None else (self.task if self.task is not None else 0)
        else:
            index = int(self.np_random.integers(len(starts)))
            latents = starts.latents[index : index + 1].float()
            actions = starts.actions[index : index + 1]
            labeled = None
            task = resolve_task(options.get("task"))
            if task is None:
                task = self.task if self.task is not None else int(starts.tasks[index])
        self._episode_task = task
        frames = self.batch.reset(None, latents, actions, torch.tensor([task]), labeled)
        self._frame = frames[0].cpu().numpy()
        self._elapsed = 0
        if self.render_mode == "human":
            self._render_human()
        return self._frame.copy(), {
            "start_index": index,
            "task": TASKS[task],
            "reward_source": self.reward_source,
        }

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        a = torch.from_numpy(check_action(action))[None]
        out = self.batch.step(a)
        self._frame = out.frames[0].cpu().numpy()
        self._elapsed += 1
        reward = float(out.reward[0])
        p_cont = float(out.continue_prob[0])
        terminated = bool(self.wm.has_heads and p_cont < 0.5)
        truncated = bool(
            self.max_episode_steps is not None and self._elapsed >= self.max_episode_steps
        )
        info = {
            "reward_source": self.reward_source,
            "continue_prob": p_cont,
            "task": TASKS[self._episode_task],
        }
        if self.render_mode == "human":
            self._render_human()
        return self._frame.copy(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn(
                'render() called without a render_mode; make the env with render_mode="rgb_array" or "human"'
            )
            return None
        if self._frame is None:
            return None
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        self._render_human()
        return None

    def _render_human(self, scale: int = 4) -> None:
        import pygame

        if self._window is None:
            pygame.display.init()
            self._window = pygame.display.set_mode((self.res * scale, self.res * scale))
            pygame.display.set_caption("LoLDream-v0")
            self._clock = pygame.time.Clock()
        pygame.event.pump()
        big = self._frame.repeat(scale, 0).repeat(scale, 1)
        self._window.blit(pygame.surfarray.make_surface(big.swapaxes(0, 1)), (0, 0))
        pygame.display.flip()
        self._clock.tick(self.metadata["render_fps"])

    def close(self) -> None:
        self.batch.close()
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = None
