"""Keyboard and mouse → LoL action, as pure functions (SPEC §8), so play input is testable headless.

Key names are pygame's (``pygame.key.name``): ``"up"``, ``"left"``, ``"q"``, ``"1"``, … This module
never imports pygame.

| input                         | action                                                      |
|-------------------------------|-------------------------------------------------------------|
| arrow keys (pairs = diagonal) | movement: nearest of the 18 bins; opposite arrows cancel     |
| right mouse button held       | movement toward the cursor (overrides the arrows), as in LoL |
| no movement input             | 18 = stand (auto-attack what is in range)                   |
| Q W E R D F                   | abilities and summoner spells                               |
| 1                             | item (potion)                                               |
| B                             | recall                                                      |
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from lol_dreamer.actions import KEY_INDEX, STAND, direction_to_bin, noop_action

# Arrow key → (dx, dy_up) with dy_up positive toward the top of the screen.
ARROWS: dict[str, tuple[int, int]] = {
    "right": (1, 0),
    "up": (0, 1),
    "left": (-1, 0),
    "down": (0, -1),
}
# Keyboard key → action key name (lol_dreamer.actions.KEY_NAMES).
ACTION_KEYS: dict[str, str] = {
    "q": "Q",
    "w": "W",
    "e": "E",
    "r": "R",
    "d": "D",
    "f": "F",
    "1": "item",
    "b": "B",
}

CONTROLS = """\
lol-dreamer play — controls
  arrow keys        move (two arrows = diagonal); no arrow = stand and auto-attack
  right mouse held  move toward the cursor
  Q W E R           abilities        D F   summoner spells
  1                 item (potion)    B     recall
  Esc quit · P pause · N single step (paused) · Enter reset · Tab human/agent
  F1 FPS overlay · F12 start/stop recording to mp4"""


def _held(pressed: Collection[str] | Mapping[str, bool]) -> set[str]:
    if isinstance(pressed, Mapping):
        return {str(k).lower() for k, v in pressed.items() if v}
    return {str(k).lower() for k in pressed}


def keys_to_action(
    pressed: Collection[str] | Mapping[str, bool],
    mouse: tuple[float, float] | None = None,
) -> np.ndarray:
    """The action for one frame from the held keys and the mouse.

    Args:
        pressed: held key names (pygame names, any case) as a set, or a name → held mapping.
        mouse: when the right mouse button is held, the cursor's offset from the champion in screen
            pixels ``(dx, dy)`` with ``dy`` positive *downwards* (screen coordinates); ``None`` when
            the button is up. A held button overrides the arrow keys.
    Returns:
        ``int64 [9]`` = ``[movement, Q, W, E, R, D, F, item, B]``.

    Example:
        >>> keys_to_action({"up", "right", "q"}).tolist()
        [2, 1, 0, 0, 0, 0, 0, 0, 0]
    """
    held = _held(pressed)
    action = noop_action()
    if mouse is not None:
        dx, dy_down = mouse
        action[0] = direction_to_bin(float(dx), -float(dy_down))
    else:
        dx = sum(ARROWS[k][0] for k in ARROWS if k in held)
        dy = sum(ARROWS[k][1] for k in ARROWS if k in held)
        action[0] = direction_to_bin(dx, dy) if (dx or dy) else STAND
    for key, name in ACTION_KEYS.items():
        if key in held:
            action[KEY_INDEX[name]] = 1
    return action
