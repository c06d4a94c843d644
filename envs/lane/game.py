"""LaneSim rules in motion: ``Game`` holds the state and advances it one frame at a time.

One lane, two towers, minion waves and two champions with the full kit (numbers in ``rules.py``).
Every timer is an integer frame count, so the game is bit-for-bit reproducible; all randomness
comes from the generator passed to ``Game``. Team 0 is blue (the player, ``Game.champs[0]``), team 1
is red (the scripted enemy champion).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from lol_dreamer.actions import STAND

from .rules import (
    AGGRO_FRAMES,
    BASE_HALF,
    BASE_POS,
    BIN_UNIT,
    CHAMP_ATK_PERIOD,
    CHAMP_RADIUS,
    CHAMP_RANGE,
    CHAMP_SPEED,
    COOLDOWN,
    DASH_FRAMES,
    DASH_STEP,
    FLASH_DIST,
    FPS,
    KILL_GOLD,
    LANE_N,
    LANE_U,
    MANA_COST,
    MINION_AGGRO,
    MINION_CAP,
    MINION_CHAMP_PENALTY,
    MINION_DMG,
    MINION_GOLD,
    MINION_HP,
    MINION_PERIOD,
    MINION_RADIUS,
    MINION_RANGE,
    MINION_SPEED,
    MINION_VS_CHAMP,
    MINION_XP,
    POTION_FRAMES,
    POTION_HEAL,
    POTION_MAX,
    Q_HIT,
    Q_RANGE,
    Q_SPEED,
    R_FX_FRAMES,
    R_RADIUS,
    RECALL_FRAMES,
    SHIELD_FRAMES,
    TOWER_DMG_CHAMP,
    TOWER_DMG_MINION,
    TOWER_MAX_HP,
    TOWER_PERIOD,
    TOWER_POS,
    TOWER_RADIUS,
    TOWER_RANGE,
    WAVE_PERIOD,
    WORLD_H,
    WORLD_W,
    XP_RANGE,
    Champion,
    Snapshot,
    lane_point,
    level_from_xp,
    xp_for_level,
)

_M_RANGE, _M_PERIOD, _M_DMG = np.array(MINION_RANGE), np.array(MINION_PERIOD), np.array(MINION_DMG)


class Game:
    """The LaneSim state and rules; ``step(action)`` advances one frame.

    Args:
        rng: the only randomness source (the env passes its ``np_random``).
        randomize: start from a random mid-game snapshot (levels, gold, HP, cooldowns, tower HP)
            rather than a fresh level-1 lane.
        enemy_brain: callable ``(game) -> int64 [9]`` that plays the red champion.
    """

    def __init__(self, rng: np.random.Generator, randomize: bool = True, enemy_brain=None) -> None:
        self.rng = rng
        self.frame = 0
        self.champs = (Champion(0), Champion(1))
        self.m_alive = np.zeros(MINION_CAP, bool)
        self.m_team = np.zeros(MINION_CAP, np.int64)
        self.m_kind = np.zeros(MINION_CAP, np.int64)
        self.m_x = np.zeros(MINION_CAP)
        self.m_y = np.zeros(MINION_CAP)
        self.m_hp = np.zeros(MINION_CAP)
        self.m_cd = np.zeros(MINION_CAP, np.int64)
        self.m_off = np.zeros(MINION_CAP)
        self.tower_hp = [TOWER_MAX_HP, TOWER_MAX_HP]
        self.tower_cd = [0, 0]
        self.projectiles: list[list[float]] = []  # [team, x, y, vx, vy, travelled, damage]
        self.tower_destroyed = False
        self.enemy_brain = enemy_brain
        self.history: deque[Snapshot] = deque(maxlen=12)
        self._setup(randomize)
        self.history.append(self.snapshot())

    # ------------------------------------------------------------------ setup
    def _setup(self, randomize: bool) -> None:
        rng = self.rng
        front = float(rng.uniform(0.30, 0.42)) if randomize else 0.34
        self._spawn_wave(0, front)
        self._spawn_wave(1, 1.0 - (float(rng.uniform(0.30, 0.42)) if randomize else 0.34))
        self.wave_t = int(rng.integers(100, WAVE_PERIOD)) if randomize else WAVE_PERIOD
        base_level = int(rng.integers(1, 7)) if randomize else 1
        for c in self.champs:
            p = float(rng.uniform(0.12, 0.45)) if randomize else 0.25
            lat = float(rng.uniform(-6.0, 6.0)) if randomize else 0.0
            c.x, c.y = lane_point(p if c.team == 0 else 1.0 - p, lat)
            if randomize:
                level = min(max(base_level + int(rng.integers(-1, 2)), 1), 7)
                c.xp = xp_for_level(level) + float(rng.uniform(0, 100))
                c.set_level(level)
                c.gold = int(rng.integers(0, 2500))
                c.hp = c.max_hp * float(rng.uniform(0.6, 1.0))
                c.mana = c.max_mana * float(rng.uniform(0.4, 1.0))
                c.potions = int(rng.integers(1, POTION_MAX + 1))
                for k in range(6):
                    if rng.random() < 0.3:
                        c.cd[k] = int(rng.integers(0, COOLDOWN[k]))
        if randomize:
            self.tower_hp = [TOWER_MAX_HP * float(rng.uniform(0.5, 1.0)) for _ in range(2)]

    def _spawn_wave(self, team: int, front: float) -> None:
        sign = 1.0 if team == 0 else -1.0
        layout = (
            (0, 0.0, -2.0),
            (0, 0.0, 2.0),
            (0, -0.025, 0.0),
            (1, -0.06, -1.5),
            (1, -0.06, 1.5),
        )
        free = np.flatnonzero(~self.m_alive)
        for slot, (kind, dp, lat) in zip(free, layout):
            x, y = lane_point(front + sign * dp, lat)
            self.m_alive[slot] = True
            self.m_team[slot], self.m_kind[slot] = team, kind
            self.m_x[slot], self.m_y[slot] = x, y
            self.m_hp[slot] = MINION_HP[kind]
            self.m_cd[slot] = 0
            self.m_off[slot] = lat

    def snapshot(self) -> Snapshot:
        """A copy of the current state that later steps cannot change."""
        a = self.m_alive
        champs = (self.champs[0].clone(), self.champs[1].clone())
        return Snapshot(
            self.frame,
            champs,
            self.m_x[a],
            self.m_y[a],
            self.m_hp[a],
            self.m_team[a],
            self.m_kind[a],
            (self.tower_hp[0], self.tower_hp[1]),
        )

    # ------------------------------------------------------------------ damage
    def hurt_champ(self, c: Champion, amount: float, src: Champion | None = None) -> None:
        """Apply damage to a champion (shield first); cancels recall; handles death and kill gold."""
        if c.dead_t or amount <= 0:
            return
        if c.recall_t:
            c.recall_t, c.cd[7] = 0, COOLDOWN[7]
        absorbed = min(c.shield, amount)
        c.shield -= absorbed
        dmg = min(amount - absorbed, c.hp)
        c.hp -= dmg
        c.taken += dmg
        if src is not None:
            src.dealt += dmg
            src.aggro_t = AGGRO_FRAMES
        if c.hp <= 0.0:
            c.hp = 0.0
            c.dead_t = int((4.0 + 1.5 * c.level) * FPS)
            c.shield = c.shield_t = c.dash_t = c.potion_t = 0
            if src is not None:
                src.gold += KILL_GOLD
                self._give_xp(src, 150.0 + 40.0 * c.level)

    def _hurt_tower(self, t: int, amount: float, src: Champion | None = None) -> None:
        if self.tower_hp[t] <= 0:
            return
        dmg = min(amount, self.tower_hp[t])
        self.tower_hp[t] -= dmg
        if src is not None:
            src.tower_dmg += dmg
        if self.tower_hp[t] <= 0:
            self.tower_hp[t] = 0.0
            self.tower_destroyed = True

    def _hit_minion(self, i: int, amount: float, src: Champion) -> None:
        self.m_hp[i] -= amount
        if self.m_hp[i] <= 0:
            gold = MINION_GOLD[self.m_kind[i]]
            src.gold += gold
            src.lasthit_gold += gold
            self._minion_died(i)

    def _minion_died(self, i: int) -> None:
        self.m_alive[i] = False
        xp = MINION_XP[self.m_kind[i]]
        for c in self.champs:
            near = math.hypot(c.x - self.m_x[i], c.y - self.m_y[i]) < XP_RANGE
            if c.team != self.m_team[i] and c.alive and near:
                self._give_xp(c, xp)

    def _give_xp(self, c: Champion, xp: float) -> None:
        c.xp += xp
        level = level_from_xp(c.xp)
        if level != c.level:
            frac_hp, frac_mana = c.hp / c.max_hp, c.mana / c.max_mana
            c.set_level(level)
            c.hp, c.mana = frac_hp * c.max_hp, frac_mana * c.max_mana

    # ------------------------------------------------------------------ step
    def step(self, action: np.ndarray) -> None:
        """Advance one frame with the player's action ``int64 [9]`` (validated by the caller)."""
        enemy_action = self.enemy_brain(self) if self.enemy_brain is not None else None
        for c in self.champs:
            c.dealt = c.taken = c.tower_dmg = 0.0
            c.lasthit_gold = 0
        self._act(self.champs[0], action)
        if enemy_action is not None:
            self._act(self.champs[1], enemy_action)
        self._step_projectiles()
        self._step_minions()
        self._step_towers()
        self._tick()
        self.frame += 1
        self.history.append(self.snapshot())

    def _act(self, c: Champion, a: np.ndarray) -> None:
        if c.dead_t:
            return
        move = int(a[0])
        keys = a[1:]
        if c.recall_t and (move != STAND or keys[:7].any()):
            c.recall_t, c.cd[7] = 0, COOLDOWN[7]
        if c.dash_t:
            c.dash_t -= 1
            self._place(c, c.x + c.fx * DASH_STEP, c.y + c.fy * DASH_STEP)
        elif move != STAND:
            ux, uy = BIN_UNIT[move]
            c.fx, c.fy = ux, uy
            self._place(c, c.x + ux * CHAMP_SPEED, c.y + uy * CHAMP_SPEED)
        for k in np.flatnonzero(keys):
            if c.cd[k] == 0 and c.mana >= MANA_COST[k]:
                self._cast(c, int(k))
        if move == STAND and not c.dash_t and not c.recall_t and c.atk_cd == 0:
            self._auto_attack(c)

    def _place(self, c: Champion, x: float, y: float) -> None:
        m = CHAMP_RADIUS + 1.0
        c.x = min(max(x, m), WORLD_W - m)
        c.y = min(max(y, m), WORLD_H - m - 2.0)  # keep room for the HP bar above

    def _cast(self, c: Champion, k: int) -> None:
        lvl = c.level - 1
        if k == 0:  # Q skillshot
            self.projectiles.append(
                [c.team, c.x, c.y, c.fx * Q_SPEED, c.fy * Q_SPEED, 0.0, 70.0 + 25.0 * lvl]
            )
        elif k == 1:  # W shield
            c.shield, c.shield_t = 80.0 + 25.0 * lvl, SHIELD_FRAMES
        elif k == 2:  # E dash
            c.dash_t = DASH_FRAMES
        elif k == 3:  # R area ultimate
            c.r_fx = R_FX_FRAMES
            dmg = 150.0 + 40.0 * lvl
            foe = self.champs[1 - c.team]
            if foe.alive and math.hypot(foe.x - c.x, foe.y - c.y) < R_RADIUS + CHAMP_RADIUS:
                self.hurt_champ(foe, dmg, c)
            hit = self.m_alive & (self.m_team != c.team)
            hit &= np.hypot(self.m_x - c.x, self.m_y - c.y) < R_RADIUS + MINION_RADIUS
            for i in np.flatnonzero(hit):
                self._hit_minion(int(i), dmg, c)
        elif k == 4:  # D flash
            self._place(c, c.x + c.fx * FLASH_DIST, c.y + c.fy * FLASH_DIST)
        elif k == 5:  # F heal
            c.hp = min(c.max_hp, c.hp + 100.0 + 20.0 * lvl)
        elif k == 6:  # item: potion
            if c.potions == 0:
                return
            c.potions -= 1
            c.potion_t = POTION_FRAMES
        elif k == 7:  # B recall
            if c.recall_t:
                return
            c.recall_t = 1
            c.cd[k] = 0
            c.mana -= MANA_COST[k]
            return
        c.cd[k] = COOLDOWN[k]
        c.mana -= MANA_COST[k]

    def _auto_attack(self, c: Champion) -> None:
        """Stand = attack the nearest enemy unit in range (edge distance; ties go to the champion)."""
        best, target = CHAMP_RANGE, -3  # -1 champion, -2 tower, >= 0 minion index
        foe = self.champs[1 - c.team]
        if foe.alive:
            gap = math.hypot(foe.x - c.x, foe.y - c.y) - CHAMP_RADIUS
            if gap <= best:
                best, target = gap, -1
        t = 1 - c.team
        if self.tower_hp[t] > 0:
            gap = math.hypot(TOWER_POS[t][0] - c.x, TOWER_POS[t][1] - c.y) - TOWER_RADIUS
            if gap < best:
                best, target = gap, -2
        cand = np.flatnonzero(self.m_alive & (self.m_team != c.team))
        if cand.size:
            gaps = np.hypot(self.m_x[cand] - c.x, self.m_y[cand] - c.y) - MINION_RADIUS
            k = int(np.argmin(gaps))
            if gaps[k] < best:
                target = int(cand[k])
        if target == -3:
            return
        c.atk_cd = CHAMP_ATK_PERIOD
        if target == -1:
            self.hurt_champ(foe, c.ad, c)
        elif target == -2:
            self._hurt_tower(t, c.ad, c)
        else:
            self._hit_minion(target, c.ad, c)

    def _step_projectiles(self) -> None:
        keep = []
        for p in self.projectiles:
            team, x, y, vx, vy, travelled, dmg = p
            nx, ny = x + vx, y + vy
            # Hit the first enemy unit along the segment (x, y) → (nx, ny).
            best_s, best = 2.0, None
            foe = self.champs[1 - team]
            cands = []
            if foe.alive:
                cands.append(("c", 0, foe.x, foe.y, CHAMP_RADIUS))
            enemy = np.flatnonzero(self.m_alive & (self.m_team != team))
            for i in enemy:
                cands.append(("m", int(i), self.m_x[i], self.m_y[i], MINION_RADIUS))
            for kind, i, ex, ey, r in cands:
                s = ((ex - x) * vx + (ey - y) * vy) / (vx * vx + vy * vy)
                s = min(max(s, 0.0), 1.0)
                if math.hypot(x + s * vx - ex, y + s * vy - ey) <= Q_HIT + r and s < best_s:
                    best_s, best = s, (kind, i)
            if best is not None:
                if best[0] == "c":
                    self.hurt_champ(foe, dmg, self.champs[team])
                else:
                    self._hit_minion(best[1], dmg, self.champs[team])
                continue
            travelled += Q_SPEED
            if travelled < Q_RANGE and 0 <= nx <= WORLD_W and 0 <= ny <= WORLD_H:
                keep.append([team, nx, ny, vx, vy, travelled, dmg])
        self.projectiles = keep

    def _step_minions(self) -> None:
        idx = np.flatnonzero(self.m_alive)
        n = idx.size
        if n == 0:
            return
        mx, my = self.m_x[idx], self.m_y[idx]
        team, kind = self.m_team[idx], self.m_kind[idx]
        c0, c1 = self.champs
        # Candidate targets: alive minions, the two champions, the two towers. ``bias`` is added to
        # the centre distance: minus the target's radius, plus a penalty that makes minions prefer
        # minions over champions; +inf marks a dead target.
        tx = np.empty(n + 4)
        ty = np.empty(n + 4)
        bias = np.empty(n + 4)
        tteam = np.empty(n + 4, np.int64)
        tx[:n], ty[:n], bias[:n], tteam[:n] = mx, my, -MINION_RADIUS, team
        tx[n:] = (c0.x, c1.x, TOWER_POS[0][0], TOWER_POS[1][0])
        ty[n:] = (c0.y, c1.y, TOWER_POS[0][1], TOWER_POS[1][1])
        bias[n:] = (
            MINION_CHAMP_PENALTY - CHAMP_RADIUS if c0.alive else np.inf,
            MINION_CHAMP_PENALTY - CHAMP_RADIUS if c1.alive else np.inf,
            -TOWER_RADIUS if self.tower_hp[0] > 0 else np.inf,
            -TOWER_RADIUS if self.tower_hp[1] > 0 else np.inf,
        )
        tteam[n:] = (0, 1, 0, 1)
        dx = tx - mx[:, None]
        dy = ty - my[:, None]
        eff = np.hypot(dx, dy) + bias
        eff[tteam == team[:, None]] = np.inf
        j = eff.argmin(axis=1)
        rows = np.arange(n)
        e = eff[rows, j]
        engaged = e < MINION_AGGRO
        gap = e - MINION_CHAMP_PENALTY * ((j >= n) & (j < n + 2))
        in_range = engaged & (gap <= _M_RANGE[kind])
        # Movement: toward the target when engaged and out of range, else along the lane.
        off = self.m_off[idx]
        ddx = dx[rows, j] + off * LANE_N[0]  # approach beside the target, keeping the formation
        ddy = dy[rows, j] + off * LANE_N[1]
        dist = np.hypot(ddx, ddy) + 1e-6
        sign = 1.0 - 2.0 * team
        lat = (
            (mx - BASE_POS[0][0]) * LANE_N[0] + (my - BASE_POS[0][1]) * LANE_N[1] - self.m_off[idx]
        )
        vx = np.where(engaged, ddx / dist, sign * LANE_U[0] - 0.2 * lat * LANE_N[0])
        vy = np.where(engaged, ddy / dist, sign * LANE_U[1] - 0.2 * lat * LANE_N[1])
        step = MINION_SPEED * ~in_range
        self.m_x[idx] = mx + step * vx
        self.m_y[idx] = my + step * vy
        # Attacks.
        cd = self.m_cd[idx]
        fire = in_range & (cd <= 0)
        self.m_cd[idx] = np.where(fire, _M_PERIOD[kind], np.maximum(cd - 1, 0))
        if not fire.any():
            return
        jf, df = j[fire], _M_DMG[kind[fire]]
        on_minion = jf < n
        if on_minion.any():
            np.subtract.at(self.m_hp, idx[jf[on_minion]], df[on_minion])
        if not on_minion.all():
            for t in range(4):
                hit = jf == n + t
                if hit.any():
                    total = float(df[hit].sum())
                    if t < 2:
                        self.hurt_champ(self.champs[t], total * MINION_VS_CHAMP)
                    else:
                        self._hurt_tower(t - 2, total * 0.5)
        for i in np.flatnonzero(self.m_alive & (self.m_hp <= 0)):
            self._minion_died(int(i))

    def _step_towers(self) -> None:
        for t in range(2):
            if self.tower_hp[t] <= 0:
                continue
            if self.tower_cd[t] > 0:
                self.tower_cd[t] -= 1
                continue
            tx, ty = TOWER_POS[t]
            foe = self.champs[1 - t]
            foe_in = foe.alive and math.hypot(foe.x - tx, foe.y - ty) <= TOWER_RANGE + CHAMP_RADIUS
            if foe_in and foe.aggro_t:  # a champion that just hit ours draws tower aggro
                self.hurt_champ(foe, TOWER_DMG_CHAMP)
                self.tower_cd[t] = TOWER_PERIOD
                continue
            cand = self.m_alive & (self.m_team != t)
            if cand.any():
                d = np.hypot(self.m_x - tx, self.m_y - ty)
                cand &= d <= TOWER_RANGE + MINION_RADIUS
                if cand.any():
                    i = int(np.flatnonzero(cand)[np.argmin(d[cand])])
                    self.m_hp[i] -= TOWER_DMG_MINION
                    if self.m_hp[i] <= 0:
                        self._minion_died(i)
                    self.tower_cd[t] = TOWER_PERIOD
                    continue
            if foe_in:
                self.hurt_champ(foe, TOWER_DMG_CHAMP)
                self.tower_cd[t] = TOWER_PERIOD

    def _tick(self) -> None:
        for c in self.champs:
            if c.dead_t:
                c.dead_t -= 1
                if c.dead_t == 0:
                    c.x, c.y = BASE_POS[c.team]
                    c.hp, c.mana = c.max_hp, c.max_mana
                    c.potions = max(c.potions, 1)
                continue
            c.cd = [v - 1 if v > 0 else 0 for v in c.cd]
            c.atk_cd = max(c.atk_cd - 1, 0)
            c.r_fx = max(c.r_fx - 1, 0)
            c.aggro_t = max(c.aggro_t - 1, 0)
            if c.shield_t:
                c.shield_t -= 1
                if c.shield_t == 0:
                    c.shield = 0.0
            regen = 1.5 / FPS
            if c.potion_t:
                c.potion_t -= 1
                regen += POTION_HEAL / POTION_FRAMES
            bx, by = BASE_POS[c.team]
            if abs(c.x - bx) <= BASE_HALF and abs(c.y - by) <= BASE_HALF:
                regen += 0.02 * c.max_hp
                c.mana = min(c.max_mana, c.mana + 0.02 * c.max_mana)
            c.hp = min(c.max_hp, c.hp + regen)
            c.mana = min(c.max_mana, c.mana + 4.0 / FPS)
            if c.recall_t:
                c.recall_t += 1
                if c.recall_t > RECALL_FRAMES:
                    c.recall_t = 0
                    c.cd[7] = COOLDOWN[7]
                    c.x, c.y = BASE_POS[c.team]
                    c.hp, c.mana = c.max_hp, c.max_mana
                    c.potions = POTION_MAX
        self.wave_t -= 1
        if self.wave_t <= 0:
            self.wave_t = WAVE_PERIOD
            self._spawn_wave(0, 0.08)
            self._spawn_wave(1, 0.92)
