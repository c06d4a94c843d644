"""lol-dreamer: a DreamerV4 world-model simulator and RL package for LoL-style lane play.

Importing the package registers two Gymnasium environments by entry-point string (nothing from
``lol_dreamer.envs`` is imported until an environment is made):

- ``LoLLane-v0``: LaneSim, the real (ground-truth) game.
- ``LoLDream-v0``: the learned world model behind the same spaces.
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

from lol_dreamer.actions import ACTION_NVEC, KEY_NAMES, TASKS, action_space

__version__ = "0.1.0"
__all__ = ["ACTION_NVEC", "KEY_NAMES", "TASKS", "__version__", "action_space", "load_world_model"]

if "LoLLane-v0" not in registry:
    register(id="LoLLane-v0", entry_point="lol_dreamer.envs.lane.env:LaneEnv")
if "LoLDream-v0" not in registry:
    register(
        id="LoLDream-v0",
        entry_point="lol_dreamer.envs.dream:DreamEnv",
        vector_entry_point="lol_dreamer.envs.dream_vector:DreamVectorEnv",
    )


def __getattr__(name: str) -> Any:
    if name == "load_world_model":
        from lol_dreamer.world_model import load_world_model

        return load_world_model
    raise AttributeError(f"module 'lol_dreamer' has no attribute {name!r}")
