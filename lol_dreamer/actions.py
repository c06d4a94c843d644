"""The LoL factorized action (SPEC §2), shared by every environment, model and policy.

One action row per frame: ``[movement, Q, W, E, R, D, F, item, B]``.

| index | name     | values                                                                  |
|-------|----------|-------------------------------------------------------------------------|
| 0     | movement | 0..17: move this frame toward k·20° (0° = screen right, counter-clockwise, |
|       |          | screen up is +90°); 18: no move command (stand; auto-attack in range)    |
| 1..8  | keys     | 0/1: Q, W, E, R, D, F, item, B pressed this frame                        |
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

N_DIRECTIONS = 18
STAND = 18
N_MOVE = 19
KEY_NAMES: tuple[str, ...] = ("Q", "W", "E", "R", "D", "F", "item", "B")
N_KEYS = len(KEY_NAMES)
ACTION_DIM = 1 + N_KEYS
ACTION_NVEC: tuple[int, ...] = (N_MOVE,) + (2,) * N_KEYS
KEY_INDEX = {name: 1 + i for i, name in enumerate(KEY_NAMES)}

TASKS: tuple[str, ...] = ("farm", "fight", "push")
TASK_INDEX = {name: i for i, name in enumerate(TASKS)}


def action_space() -> spaces.MultiDiscrete:
    """The canonical action space ``MultiDiscrete([19, 2, 2, 2, 2, 2, 2, 2, 2])`` (int64)."""
    return spaces.MultiDiscrete(np.array(ACTION_NVEC, dtype=np.int64))


def noop_action() -> np.ndarray:
    """Stand still, press nothing."""
    a = np.zeros(ACTION_DIM, dtype=np.int64)
    a[0] = STAND
    return a


def direction_to_bin(dx: float, dy_up: float) -> int:
    """Nearest of the 18 movement bins for a direction; ``dy_up`` is positive toward screen top.

    Returns ``STAND`` for a zero vector.
    """
    if dx == 0 and dy_up == 0:
        return STAND
    angle = math.degrees(math.atan2(dy_up, dx)) % 360.0
    return round(angle / 20.0) % N_DIRECTIONS


def bin_to_unit(k: int) -> tuple[float, float]:
    """Unit vector ``(dx, dy_up)`` of movement bin ``k`` (``(0, 0)`` for ``STAND``)."""
    if k == STAND:
        return 0.0, 0.0
    if not 0 <= k < N_DIRECTIONS:
        raise ValueError(f"movement bin must be in 0..18, got {k}")
    a = math.radians(20.0 * k)
    return math.cos(a), math.sin(a)


def check_action(action: np.ndarray | list[int]) -> np.ndarray:
    """Validate one action row and return it as ``int64 [9]``; raises a ValueError naming the fix."""
    a = np.asarray(action)
    if a.shape != (ACTION_DIM,):
        raise ValueError(
            f"action must have shape (9,) = [movement, Q, W, E, R, D, F, item, B], got {a.shape}"
        )
    a = a.astype(np.int64)
    if not (0 <= a[0] < N_MOVE) or np.any((a[1:] < 0) | (a[1:] > 1)):
        raise ValueError(
            f"action out of range: movement must be 0..18 and keys 0/1, got {a.tolist()}"
        )
    return a
