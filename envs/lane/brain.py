"""Hand-written champion logic shared by the scripted player and the scripted enemy champion.

``decide(snap, side, mode, mem)`` maps a (possibly stale) ``Snapshot`` to one action row for the
champion of team ``side``. Modes: ``farm`` (last-hit minions), ``fight`` (trade with the enemy
champion), ``push`` (clear the wave, hit the tower while minions tank) and ``lane`` (the enemy
champion's mix: farm, and fight when the player is close and has just hit it or is clearly weaker).
Every mode retreats, drinks a potion, heals and recalls at low HP. ``mem`` is a small dict the
caller keeps between frames (hysteresis, the enemy's last position for leading skillshots).
"""

from __future__ import annotations

import math

import numpy as np

from lol_dreamer.actions import ACTION_DIM, KEY_INDEX, STAND, direction_to_bin

from .game import Game
from .rules import (
    BASE_HALF,
    BASE_POS,
    BIN_UNIT,
    CHAMP_ATK_PERIOD,
    CHAMP_RADIUS,
    CHAMP_RANGE,
    CHAMP_SPEED,
    FPS,
    LANE_U,
    MANA_COST,
    MINION_RADIUS,
    Q_RANGE,
    Q_SPEED,
    R_RADIUS,
    TOWER_POS,
    TOWER_RADIUS,
    TOWER_RANGE,
    Champion,
    Snapshot,
)


class _Plan:
    """Builds one action row."""

    def __init__(self, me: Champion) -> None:
        self.me = me
        self.a = np.zeros(ACTION_DIM, dtype=np.int64)
        self.a[0] = STAND

    def toward(self, x: float, y: float, stop: float = 0.8) -> None:
        dx, dy = x - self.me.x, y - self.me.y
        self.a[0] = STAND if math.hypot(dx, dy) < stop else direction_to_bin(dx, dy)

    def away(self, x: float, y: float) -> None:
        self.a[0] = (
            direction_to_bin(self.me.x - x, self.me.y - y)
            if (x, y) != (self.me.x, self.me.y)
            else STAND
        )

    def key(self, name: str) -> bool:
        """Press ``name`` if it is off cooldown and affordable; returns whether it was pressed."""
        k = KEY_INDEX[name] - 1
        if self.me.cd[k] == 0 and self.me.mana >= MANA_COST[k] + (20.0 if k < 4 else 0.0):
            self.a[k + 1] = 1
            return True
        return False


def _dist(a: Champion, x: float, y: float) -> float:
    return math.hypot(a.x - x, a.y - y)


def _nearest(snap: Snapshot, side: int) -> tuple[int, float]:
    """The unit a stand would attack, by the game's rule: (-1 champion | -2 tower | minion row, gap)."""
    me, foe = snap.champs[side], snap.champs[1 - side]
    best, target = math.inf, -3
    if foe.alive:
        best, target = _dist(me, foe.x, foe.y) - CHAMP_RADIUS, -1
    t = 1 - side
    if snap.tower_hp[t] > 0:
        gap = _dist(me, *TOWER_POS[t]) - TOWER_RADIUS
        if gap < best:
            best, target = gap, -2
    enemy = np.flatnonzero(snap.m_team != side)
    if enemy.size:
        gaps = np.hypot(snap.m_x[enemy] - me.x, snap.m_y[enemy] - me.y) - MINION_RADIUS
        k = int(np.argmin(gaps))
        if gaps[k] < best:
            best, target = float(gaps[k]), int(enemy[k])
    return target, best


def _attack(p: _Plan, snap: Snapshot, side: int, target: int, x: float, y: float) -> None:
    """Stand (attack) when ``target`` is the nearest enemy and in range, else walk toward it."""
    nearest, gap = _nearest(snap, side)
    if nearest == target and gap <= CHAMP_RANGE - 0.5:
        p.a[0] = STAND
    else:
        p.toward(x, y, stop=0.0)


def _tower_unsafe(snap: Snapshot, side: int, x: float, y: float, strict: bool = False) -> bool:
    """True when (x, y) is inside the enemy tower's range with no allied minion there to tank.

    With ``strict`` allied minions do not make it safe (hitting a champion there draws the tower).
    """
    t = 1 - side
    if snap.tower_hp[t] <= 0:
        return False
    tx, ty = TOWER_POS[t]
    if math.hypot(x - tx, y - ty) > TOWER_RANGE + CHAMP_RADIUS + 3.0:
        return False
    if strict:
        return True
    allies = snap.m_team == side
    return not np.any(allies & (np.hypot(snap.m_x - tx, snap.m_y - ty) < TOWER_RANGE - 1.0))


def _avoid_tower(p: _Plan, snap: Snapshot, side: int, strict: bool = False) -> None:
    """Override the move when it would end inside the (undefended) enemy tower's range."""
    me = p.me
    ux, uy = BIN_UNIT[int(p.a[0])]
    x, y = me.x + 3.0 * CHAMP_SPEED * ux, me.y + 3.0 * CHAMP_SPEED * uy
    if _tower_unsafe(snap, side, x, y, strict):
        p.away(*TOWER_POS[1 - side])
        p.a[KEY_INDEX["E"]] = 0


def _fallback_point(side: int) -> tuple[float, float]:
    tx, ty = TOWER_POS[side]
    s = 1.0 if side == 0 else -1.0
    return tx + s * 6.0 * LANE_U[0], ty + s * 6.0 * LANE_U[1]


def _survive(p: _Plan, snap: Snapshot, side: int, mem: dict) -> bool:
    """Low-HP behaviour; returns True when it decided the action."""
    me, foe = p.me, snap.champs[1 - side]
    frac = me.hp / me.max_hp
    if frac < 0.3:
        mem["retreat"] = True
    elif frac > 0.85:
        mem["retreat"] = False
    if not mem.get("retreat"):
        return False
    if frac < 0.6 and me.potions > 0 and me.potion_t == 0:
        p.key("item")
    if frac < 0.25:
        p.key("F")
    bx, by = BASE_POS[side]
    if abs(me.x - bx) <= BASE_HALF and abs(me.y - by) <= BASE_HALF:
        return True  # the fountain heals
    foe_near = foe.alive and _dist(me, foe.x, foe.y) < 30.0
    enemy = snap.m_team != side
    minion_near = np.any(enemy & (np.hypot(snap.m_x - me.x, snap.m_y - me.y) < 16.0))
    if me.recall_t and not foe_near:
        return True  # keep channelling
    if not foe_near and not minion_near and me.cd[7] == 0:
        p.a[KEY_INDEX["B"]] = 1
        return True
    p.toward(bx, by)
    return True


def _farm(p: _Plan, snap: Snapshot, side: int) -> None:
    me = p.me
    enemy = np.flatnonzero(snap.m_team != side)
    if enemy.size == 0:
        allies = np.flatnonzero(snap.m_team == side)
        if allies.size:
            # Stand behind the allied minion closest to the enemy base.
            s = 1.0 if side == 0 else -1.0
            front = allies[
                np.argmax(s * (snap.m_x[allies] * LANE_U[0] + snap.m_y[allies] * LANE_U[1]))
            ]
            x, y = snap.m_x[front] - s * 8.0 * LANE_U[0], snap.m_y[front] - s * 8.0 * LANE_U[1]
        else:
            x, y = _fallback_point(side)
        if _tower_unsafe(snap, side, x, y):
            x, y = _fallback_point(side)
        p.toward(x, y, stop=2.0)
        return
    d = np.hypot(snap.m_x[enemy] - me.x, snap.m_y[enemy] - me.y)
    near = d < 45.0
    pool = enemy[near] if near.any() else enemy
    i = pool[np.argmin(snap.m_hp[pool])]
    di = math.hypot(snap.m_x[i] - me.x, snap.m_y[i] - me.y)
    hp = snap.m_hp[i]
    qdmg = 70.0 + 25.0 * (me.level - 1)
    if hp <= me.ad * 1.05 and not _tower_unsafe(snap, side, snap.m_x[i], snap.m_y[i]):
        if (
            di > CHAMP_RANGE
            and hp <= qdmg
            and di < Q_RANGE - 4.0
            and me.mana > 120.0
            and p.key("Q")
        ):
            p.toward(snap.m_x[i], snap.m_y[i], stop=0.0)
            return
        _attack(p, snap, side, int(i), snap.m_x[i], snap.m_y[i])
        return
    # Wait just outside attack range of the nearest enemy minion.
    dn = float(d.min())
    j = enemy[np.argmin(d)]
    if dn < CHAMP_RANGE + 1.5:
        p.away(snap.m_x[j], snap.m_y[j])
    elif dn > CHAMP_RANGE + 7.0 and not _tower_unsafe(snap, side, snap.m_x[j], snap.m_y[j]):
        p.toward(snap.m_x[j], snap.m_y[j])


def _push(p: _Plan, snap: Snapshot, side: int) -> None:
    me, foe = p.me, snap.champs[1 - side]
    if (
        foe.alive
        and _dist(me, foe.x, foe.y) < 16.0
        and _time_to_kill(me, foe) < _time_to_kill(foe, me)
    ):
        _fight(p, snap, side)
        return
    t = 1 - side
    tx, ty = TOWER_POS[t]
    if snap.tower_hp[t] > 0 and not _tower_unsafe(snap, side, tx, ty) and _dist(me, tx, ty) < 45.0:
        _attack(p, snap, side, -2, tx, ty)  # allied minions tank: hit the tower
        return
    enemy = np.flatnonzero(snap.m_team != side)
    d = np.hypot(snap.m_x[enemy] - me.x, snap.m_y[enemy] - me.y)
    if enemy.size and d.min() < 40.0:
        j = int(enemy[np.argmin(d)])
        jx, jy = snap.m_x[j], snap.m_y[j]
        if _tower_unsafe(snap, side, jx, jy):
            _hold_back(p, snap, side)
            return
        if np.sum(d < R_RADIUS - 1.0) >= 2:
            p.key("R")
        if float(d.min()) < Q_RANGE - 6.0 and me.mana > 60.0 and p.key("Q"):
            p.toward(jx, jy, stop=0.0)
            return
        _attack(p, snap, side, j, jx, jy)
        return
    if snap.tower_hp[t] > 0:
        _hold_back(p, snap, side)
        return
    p.toward(*_fallback_point(side), stop=2.0)


def _hold_back(p: _Plan, snap: Snapshot, side: int) -> None:
    """Stand behind the allied wave (or by the own tower) out of harm's way."""
    s = 1.0 if side == 0 else -1.0
    allies = np.flatnonzero(snap.m_team == side)
    if allies.size:
        along = snap.m_x[allies] * LANE_U[0] + snap.m_y[allies] * LANE_U[1]
        k = allies[np.argmax(s * along)]
        x, y = snap.m_x[k] - s * 10.0 * LANE_U[0], snap.m_y[k] - s * 10.0 * LANE_U[1]
        if not _tower_unsafe(snap, side, x, y):
            p.toward(x, y, stop=2.0)
            return
    p.toward(*_fallback_point(side), stop=2.0)


def _time_to_kill(att: Champion, vic: Champion) -> float:
    """Seconds ``att`` needs to kill ``vic`` with auto-attacks after its ready Q and R land."""
    burst = (70.0 + 25.0 * (att.level - 1)) * (att.cd[0] == 0 and att.mana >= MANA_COST[0])
    burst += (150.0 + 40.0 * (att.level - 1)) * (att.cd[3] == 0 and att.mana >= MANA_COST[3])
    dps = att.ad * FPS / CHAMP_ATK_PERIOD
    return max(vic.hp + vic.shield - burst, 0.0) / dps


def _lead(snap: Snapshot, side: int, mem: dict) -> tuple[float, float]:
    """Where to aim a Q at the enemy champion: its position plus its last velocity × flight time."""
    me, foe = snap.champs[side], snap.champs[1 - side]
    prev = mem.get("foe")
    mem["foe"] = (snap.frame, foe.x, foe.y)
    if prev is None or prev[0] != snap.frame - 1 or not foe.alive:
        return foe.x, foe.y
    t = _dist(me, foe.x, foe.y) / Q_SPEED
    return foe.x + (foe.x - prev[1]) * t, foe.y + (foe.y - prev[2]) * t


def _fight(p: _Plan, snap: Snapshot, side: int, aim: tuple[float, float] | None = None) -> None:
    me, foe = p.me, snap.champs[1 - side]
    if not foe.alive:
        _hold_back(p, snap, side)
        return
    ax, ay = aim if aim is not None else (foe.x, foe.y)
    d = _dist(me, foe.x, foe.y)
    theirs = foe.hp / foe.max_hp
    dive = _tower_unsafe(snap, side, foe.x, foe.y, strict=True)
    ahead = _time_to_kill(me, foe) < 0.85 * _time_to_kill(foe, me)
    if not dive and (ahead or (theirs < 0.2 and me.hp > 0.5 * me.max_hp)):
        if d < 16.0:
            p.key("W")
        if d < R_RADIUS - 2.0:
            p.key("R")
        if d <= CHAMP_RANGE + 2.0:
            if me.cd[0] == 0 and p.key("Q"):
                p.toward(ax, ay, stop=0.0)
                return
            _attack(p, snap, side, -1, foe.x, foe.y)
            return
        if d < Q_RANGE - 8.0 and p.key("Q"):
            p.toward(ax, ay, stop=0.0)
        else:
            p.toward(foe.x, foe.y, stop=0.0)
        if CHAMP_RANGE + 4.0 < d < CHAMP_RANGE + 14.0:
            p.key("E")
        return
    # Behind: keep poke distance (backing off toward the own tower) and throw Q when ready.
    if d < 24.0:
        bx, by = _fallback_point(side)
        if _dist(me, bx, by) > 3.0:
            p.toward(bx, by)
        else:
            p.away(foe.x, foe.y)
    elif d < Q_RANGE - 6.0 and me.cd[0] == 0 and p.key("Q"):
        p.toward(ax, ay, stop=0.0)
    elif d > 34.0:
        if _tower_unsafe(snap, side, foe.x, foe.y) and d < 40.0:
            _hold_back(p, snap, side)
        else:
            p.toward(foe.x, foe.y)


def decide(snap: Snapshot, side: int, mode: str, mem: dict) -> np.ndarray:
    """One action row ``int64 [9]`` for the champion of team ``side`` in ``mode``.

    Args:
        snap: the state the decision is based on (may be a few frames old).
        side: 0 = blue (player), 1 = red (enemy champion).
        mode: ``farm`` | ``fight`` | ``push`` | ``lane``.
        mem: per-agent dict kept by the caller between calls.
    """
    me = snap.champs[side]
    p = _Plan(me)
    aim = _lead(snap, side, mem)
    if not me.alive or _survive(p, snap, side, mem):
        return p.a
    if mode == "farm":
        _farm(p, snap, side)
        _avoid_tower(p, snap, side)
    elif mode == "push":
        _push(p, snap, side)
    elif mode == "fight":
        _fight(p, snap, side, aim)
        _avoid_tower(p, snap, side, strict=snap.champs[1 - side].alive)
    elif mode == "lane":
        foe = snap.champs[1 - side]
        provoked = foe.aggro_t > 0 or _time_to_kill(me, foe) < 0.7 * _time_to_kill(foe, me)
        if foe.alive and _dist(me, foe.x, foe.y) < 18.0 and me.hp > 0.4 * me.max_hp and provoked:
            _fight(p, snap, side, aim)
        else:
            _farm(p, snap, side)
        _avoid_tower(p, snap, side)
    else:
        raise ValueError(f"unknown scripted mode {mode!r}; use farm, fight, push or lane")
    return p.a


class EnemyBrain:
    """Plays the red champion in ``lane`` mode with epsilon noise and a reaction delay.

    Args:
        epsilon: probability of a uniformly random action on a frame.
        delay: frames between the state it sees and the present.
    """

    def __init__(self, epsilon: float = 0.1, delay: int = 3) -> None:
        self.epsilon, self.delay, self.mem = epsilon, delay, {}

    def __call__(self, game: Game) -> np.ndarray:
        snap = game.history[max(0, len(game.history) - 1 - self.delay)]
        a = decide(snap, 1, "lane", self.mem)
        if game.rng.random() < self.epsilon:
            a = np.concatenate([game.rng.integers(0, 19, 1), game.rng.random(8) < 0.05]).astype(
                np.int64
            )
        return a
