"""LaneSim numbers and unit state: the map, stats, ability costs, ``Champion`` and ``Snapshot``.

World coordinates are in *units*, x to the right and y **up**; the world is ``WORLD_W × WORLD_H``
units with the blue base at the bottom-left and the red base at the top-right (at 128 px one unit is
one pixel). Timers are integer frame counts at ``FPS`` frames per second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lol_dreamer.actions import STAND, bin_to_unit

FPS = 20
WORLD_W, WORLD_H = 128.0, 104.0
BASE_POS = ((8.0, 8.0), (120.0, 96.0))
BASE_HALF = 8.0  # fountain square half-size (heals allies inside)
_LANE_DX, _LANE_DY = BASE_POS[1][0] - BASE_POS[0][0], BASE_POS[1][1] - BASE_POS[0][1]
LANE_LEN = math.hypot(_LANE_DX, _LANE_DY)
LANE_U = (_LANE_DX / LANE_LEN, _LANE_DY / LANE_LEN)  # blue → red
LANE_N = (-LANE_U[1], LANE_U[0])
LANE_HALF_WIDTH = 7.0


def lane_point(progress: float, lateral: float = 0.0) -> tuple[float, float]:
    """World position at ``progress`` ∈ [0, 1] along the lane (0 = blue base) and ``lateral`` units off it."""
    return (
        BASE_POS[0][0] + progress * _LANE_DX + lateral * LANE_N[0],
        BASE_POS[0][1] + progress * _LANE_DY + lateral * LANE_N[1],
    )


TOWER_POS = (lane_point(0.30), lane_point(0.70))
TOWER_RADIUS = 4.0
TOWER_MAX_HP = 2000.0
TOWER_RANGE = 17.0
TOWER_DMG_CHAMP = 180.0
TOWER_DMG_MINION = 60.0
TOWER_PERIOD = 20

CHAMP_RADIUS = 3.0
CHAMP_SPEED = 1.2  # units / frame
CHAMP_RANGE = 11.0
CHAMP_ATK_PERIOD = 18
MINION_RADIUS = 1.5
MINION_CAP = 48
MINION_SPEED = 0.6
MINION_AGGRO = 14.0
#                melee  ranged
MINION_HP = (280.0, 200.0)
MINION_DMG = (30.0, 40.0)
MINION_VS_CHAMP = 0.5  # champions take half damage from minions
MINION_CHAMP_PENALTY = 6.0  # minions prefer a minion unless a champion is this much closer
MINION_RANGE = (3.0, 10.0)
MINION_PERIOD = (25, 30)
MINION_GOLD = (21, 14)
MINION_XP = (60.0, 30.0)
XP_RANGE = 30.0
WAVE_PERIOD = 300  # frames between waves (15 s)
KILL_GOLD = 300
RECALL_FRAMES = 80
POTION_FRAMES = 100
POTION_HEAL = 150.0
POTION_MAX = 3

# Ability slots (index = action index - 1): Q, W, E, R, D, F, item, B.
COOLDOWN = (100, 240, 180, 700, 800, 600, POTION_FRAMES, 40)  # frames
MANA_COST = (40.0, 50.0, 40.0, 100.0, 0.0, 0.0, 0.0, 0.0)
Q_SPEED, Q_RANGE, Q_HIT = 4.0, 40.0, 3.0
SHIELD_FRAMES = 50
DASH_FRAMES, DASH_STEP = 4, 4.0
R_RADIUS = 16.0
R_FX_FRAMES = 6
FLASH_DIST = 20.0
AGGRO_FRAMES = 40
BIN_UNIT = (*(bin_to_unit(k) for k in range(STAND)), (0.0, 0.0))


def level_from_xp(xp: float) -> int:
    """Level 1..18; going from level L to L + 1 costs ``180 + 100·(L − 1)`` xp."""
    level, need = 1, 180.0
    while level < 18 and xp >= need:
        xp -= need
        level += 1
        need += 100.0
    return level


def xp_for_level(level: int) -> float:
    """Total xp at which ``level`` is reached."""
    return sum(180.0 + 100.0 * (lv - 1) for lv in range(1, level))


class Champion:
    """One champion's state. Per-step reward counters are reset at the start of every step."""

    def __init__(self, team: int) -> None:
        self.team = team
        self.x, self.y = BASE_POS[team]
        self.fx, self.fy = LANE_U if team == 0 else (-LANE_U[0], -LANE_U[1])
        self.xp, self.gold = 0.0, 0
        self.set_level(1)
        self.hp, self.mana = self.max_hp, self.max_mana
        self.cd = [0] * 8
        self.shield, self.shield_t = 0.0, 0
        self.dash_t, self.potion_t, self.recall_t, self.dead_t = 0, 0, 0, 0
        self.potions = POTION_MAX
        self.atk_cd, self.r_fx, self.aggro_t = 0, 0, 0
        self.dealt = self.taken = self.tower_dmg = 0.0
        self.lasthit_gold = 0

    def set_level(self, level: int) -> None:
        self.level = level
        self.max_hp = 520.0 + 85.0 * (level - 1)
        self.max_mana = 300.0 + 40.0 * (level - 1)
        self.ad = 55.0 + 3.5 * (level - 1)

    def clone(self) -> Champion:
        """An independent copy (the cooldown list is copied too)."""
        c = object.__new__(Champion)
        c.__dict__.update(self.__dict__)
        c.cd = list(self.cd)
        return c

    @property
    def alive(self) -> bool:
        return self.dead_t == 0


@dataclass
class Snapshot:
    """A frozen copy of what a scripted brain reads (positions, HP, cooldowns, minions, towers)."""

    frame: int
    champs: tuple[Champion, Champion]
    m_x: np.ndarray
    m_y: np.ndarray
    m_hp: np.ndarray
    m_team: np.ndarray
    m_kind: np.ndarray
    tower_hp: tuple[float, float]
