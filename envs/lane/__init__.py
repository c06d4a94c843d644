"""LaneSim, the ground-truth lane game (``LoLLane-v0``).

- ``game.py``: state and rules (``Game``), ``brain.py``: hand-written champion logic,
- ``render.py``: numpy renderer + HUD, ``detector.py``: ``detect_player(frame)``,
- ``env.py``: ``LaneEnv`` + ``STATE_FIELDS``, ``scripted.py``: ``ScriptedPlayer``.
"""

from .detector import detect_player
from .env import STATE_FIELDS, LaneEnv
from .scripted import ScriptedPlayer

__all__ = ["STATE_FIELDS", "LaneEnv", "ScriptedPlayer", "detect_player"]
