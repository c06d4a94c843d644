"""Numpy renderer for LaneSim: flat colours, rectangle/disc stamps, and a HUD strip at the bottom.

Frame layout (any square resolution ``res``): the top ``res − hud_h`` rows show the world, the bottom
``hud_h = round(12·res/64)`` rows are the HUD. The HUD never overlaps the world, and no colour except
the player's body uses ``PLAYER_COLOUR``; the player is drawn last, as a disc of odd diameter centred
on pixel ``(px, py)`` (column, row), so ``detector.detect_player`` recovers the centre exactly.

HUD (coordinates in 1/64 of the frame width): eight ability icons Q W E R D F item B, 6×6 each, whose
top part is darkened in proportion to the remaining cooldown (item icon: potion-charge pips on its
bottom row; B icon: fills purple from the bottom while recalling), the level (two digits, top right),
the gold (five digits, bottom left) and the player's HP and mana bars (bottom right).
"""

from __future__ import annotations

import math

import numpy as np

from .game import Game
from .rules import (
    BASE_HALF,
    BASE_POS,
    CHAMP_RADIUS,
    COOLDOWN,
    LANE_HALF_WIDTH,
    LANE_N,
    MINION_HP,
    R_RADIUS,
    RECALL_FRAMES,
    TOWER_MAX_HP,
    TOWER_POS,
    TOWER_RADIUS,
    WORLD_H,
    WORLD_W,
    Champion,
)

PLAYER_COLOUR = (0, 255, 255)
_KEEP = 7
_MINION_HP = np.array(MINION_HP)
C = {
    "grass": (34, 70, 42),
    "lane": (118, 104, 78),
    "base0": (36, 58, 112),
    "base1": (112, 38, 40),
    "tower0": (40, 90, 210),
    "tower1": (205, 45, 45),
    "core0": (150, 180, 255),
    "core1": (255, 170, 150),
    "rubble": (78, 78, 78),
    "melee0": (70, 120, 240),
    "ranged0": (150, 150, 255),
    "melee1": (225, 70, 55),
    "ranged1": (255, 150, 120),
    "enemy": (255, 70, 220),
    "q0": (235, 235, 160),
    "q1": (255, 210, 60),
    "r0": (90, 130, 200),
    "r1": (200, 110, 100),
    "shield": (240, 240, 240),
    "recall": (170, 90, 255),
    "bar_bg": (16, 16, 16),
    "hp_ally": (60, 220, 60),
    "hp_enemy": (235, 50, 50),
    "mana": (70, 110, 255),
    "hud": (22, 22, 30),
    "gold": (255, 205, 0),
    "text": (235, 235, 235),
    "pip_off": (60, 60, 60),
}
ICON_COLOURS = (
    (230, 150, 40),  # Q
    (200, 200, 210),  # W
    (120, 200, 90),  # E
    (220, 60, 140),  # R
    (250, 240, 120),  # D
    (90, 230, 180),  # F
    (210, 40, 40),  # item
    (150, 110, 250),  # B
)
_FONT = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
}


def _disc(r: int) -> np.ndarray:
    """Boolean disc mask of odd side ``2r + 1``, symmetric about its centre pixel."""
    o = np.arange(-r, r + 1)
    return (o[:, None] ** 2 + o[None, :] ** 2) <= r * r + r


def _fill(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, colour) -> None:
    """Fill the clipped rectangle ``[y0, y1) × [x0, x1)``."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x0 < x1 and y0 < y1:
        img[y0:y1, x0:x1] = colour


def _stamp(img: np.ndarray, cx: int, cy: int, mask: np.ndarray, colour) -> None:
    """Paint ``mask`` (odd square) centred on pixel (cx, cy), clipped to the image."""
    r = mask.shape[0] // 2
    h, w = img.shape[:2]
    x0, y0, x1, y1 = cx - r, cy - r, cx + r + 1, cy + r + 1
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    sub = img[cy0:cy1, cx0:cx1]
    sub[mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]] = colour


class Renderer:
    """Draws a ``Game`` into ``uint8 [res, res, 3]`` frames.

    Args:
        res: frame side in pixels (any value ≥ 32; 64, 128 and 256 are the usual ones).
        camera: ``fixed`` (whole lane) or ``follow`` (2× zoom centred on the player).
    """

    def __init__(self, res: int = 128, camera: str = "fixed") -> None:
        if res < 32:
            raise ValueError(f"res must be at least 32 pixels, got {res}")
        if camera not in ("fixed", "follow"):
            raise ValueError(f"camera must be 'fixed' or 'follow', got {camera!r}")
        self.res, self.camera = res, camera
        s = res / 64.0
        self.hud_h = round(12 * s)
        self.world_h = res - self.hud_h
        zoom = 2.0 if camera == "follow" else 1.0
        self.kx = zoom * res / WORLD_W
        self.ky = zoom * self.world_h / WORLD_H
        k = self.kx
        self.r_champ = max(1, round(CHAMP_RADIUS * k))
        self.m_champ = _disc(self.r_champ)
        self.m_ring = _disc(self.r_champ + max(1, round(k)))
        self.m_r = _disc(max(2, round(R_RADIUS * k)))
        self.m_q = _disc(max(1, round(1.2 * k)))
        self.minion = max(2, round(3 * k))
        self.ranged = max(2, round(2.4 * k))
        self.tower = max(4, round(2 * TOWER_RADIUS * k))
        self.core = max(2, self.tower // 2)
        self.bar_h = max(1, round(1.2 * k))
        self.bar_champ = max(6, round(10 * k))
        self.bar_minion = max(2, round(4 * k))
        self.pad = res
        self._minion_setup()
        self._bg_plain = self._background(zoom)
        self.background = self._bg_plain.copy()
        self._tower_up: list[bool | None] = [None, None]
        self._hud_setup(s)

    # ------------------------------------------------------------------ static layers
    def _background(self, zoom: float) -> np.ndarray:
        """World background (fixed) or the whole world at zoom, padded by ``pad`` (follow)."""
        if self.camera == "fixed":
            h, w = self.world_h, self.res
        else:
            h, w = round(WORLD_H * self.ky), round(WORLD_W * self.kx)
        ys, xs = np.mgrid[0:h, 0:w]
        wx = (xs + 0.5) / self.kx
        wy = WORLD_H - (ys + 0.5) / self.ky
        img = np.empty((h, w, 3), np.uint8)
        img[:] = C["grass"]
        lat = (wx - BASE_POS[0][0]) * LANE_N[0] + (wy - BASE_POS[0][1]) * LANE_N[1]
        img[np.abs(lat) <= LANE_HALF_WIDTH] = C["lane"]
        for t in range(2):
            bx, by = BASE_POS[t]
            img[(np.abs(wx - bx) <= BASE_HALF) & (np.abs(wy - by) <= BASE_HALF)] = C[f"base{t}"]
        if self.camera == "fixed":
            return img
        p = self.pad
        big = np.zeros((h + 2 * p, w + 2 * p, 3), np.uint8)
        big[:] = (10, 12, 10)
        big[p : p + h, p : p + w] = img
        return big

    def _hud_setup(self, s: float) -> None:
        self.font = max(1, int(s))
        self.icons = [
            (round((1 + 7 * i) * s), round(1 * s), round((7 + 7 * i) * s), round(7 * s))
            for i in range(8)
        ]
        self.pip = max(1, round(s))
        self.icon_h = self.icons[0][3] - self.icons[0][1]
        self.level_xy = (round(57 * s), round(1 * s))
        self.gold_xy = (round(1 * s), round(7 * s))
        self.hp_bar = (round(23 * s), round(7 * s), round(63 * s), round(9 * s))
        self.mana_bar = (round(23 * s), round(10 * s), round(63 * s), round(12 * s))
        self.bar_w = self.hp_bar[2] - self.hp_bar[0]
        f = self.font
        self.glyphs = {
            ch: np.kron(
                np.array([[c == "1" for c in row] for row in rows], bool), np.ones((f, f), bool)
            )
            for ch, rows in _FONT.items()
        }
        hud = np.empty((self.hud_h, self.res, 3), np.uint8)
        hud[:] = C["hud"]
        dark = hud.copy()
        for (x0, y0, x1, y1), col in zip(self.icons, ICON_COLOURS):
            hud[y0:y1, x0:x1] = col
            dark[y0:y1, x0:x1] = tuple(int(v * 0.3) for v in col)
        self.hud_static, self.hud_dark = hud, dark
        self._hud_key: tuple | None = None
        self._hud_cache = hud

    def _minion_setup(self) -> None:
        """Pixel offsets and palette indices of the minion sprite (body below, HP bar above)."""
        side, rside = self.minion, self.ranged
        self.m_half = side // 2
        o = np.arange(side) - side // 2
        by, bx = (a.ravel() for a in np.meshgrid(o, o, indexing="ij"))
        ranged = (
            (bx >= -(rside // 2))
            & (bx < rside - rside // 2)
            & (by >= -(rside // 2))
            & (by < rside - rside // 2)
        )
        top = -self.m_half - 1 - self.bar_h
        gy, gx = (
            a.ravel()
            for a in np.meshgrid(np.arange(self.bar_h), np.arange(self.bar_minion), indexing="ij")
        )
        self.ms_y = np.concatenate([by, top + gy])
        self.ms_x = np.concatenate([bx, gx - self.bar_minion // 2])
        nb = by.size
        self.ms_ext = int(max(np.abs(self.ms_y).max(), np.abs(self.ms_x).max()))
        self.ms_isbar = np.concatenate([np.zeros(nb, bool), np.ones(gy.size, bool)])
        self.ms_barx = np.concatenate([np.full(nb, -1), gx])
        # Palette: 0/2 melee blue/red, 1/3 ranged blue/red, 4/5 HP blue/red, 6 bar background, 7 keep.
        # ms_body[kind, team] holds the palette index of every sprite pixel's body part.
        self.ms_body = np.zeros((2, 2, self.ms_y.size), np.int64)
        for team in range(2):
            self.ms_body[0, team, :nb] = 2 * team
            self.ms_body[1, team, :nb] = np.where(ranged, 2 * team + 1, _KEEP)
        self.ms_palette = np.array(
            [
                C["melee0"],
                C["ranged0"],
                C["melee1"],
                C["ranged1"],
                C["hp_ally"],
                C["hp_enemy"],
                C["bar_bg"],
                (0, 0, 0),
            ],
            np.uint8,
        )

    # ------------------------------------------------------------------ transforms
    def offset(self, game: Game) -> tuple[int, int]:
        """Pixel offset of the view (0, 0 for the fixed camera)."""
        if self.camera == "fixed":
            return 0, 0
        p = game.champs[0]
        return (
            math.floor(p.x * self.kx) - self.res // 2,
            math.floor((WORLD_H - p.y) * self.ky) - self.world_h // 2,
        )

    def to_pixel(self, x: float, y: float, off: tuple[int, int]) -> tuple[int, int]:
        """World position → (column, row) of the pixel that contains it."""
        return math.floor(x * self.kx) - off[0], math.floor((WORLD_H - y) * self.ky) - off[1]

    def player_pixel(self, game: Game) -> tuple[float, float]:
        """(px, py) of the player's body centre as drawn; (-1, -1) while the player is dead."""
        p = game.champs[0]
        if not p.alive:
            return -1.0, -1.0
        cx, cy = self.to_pixel(p.x, p.y, self.offset(game))
        return float(cx), float(cy)

    # ------------------------------------------------------------------ drawing
    def render(self, game: Game) -> np.ndarray:
        """A fresh ``uint8 [res, res, 3]`` frame of the current state."""
        frame = np.empty((self.res, self.res, 3), np.uint8)
        world = frame[: self.world_h]
        off = self.offset(game)
        self._sync_towers(game)
        if self.camera == "fixed":
            world[:] = self.background
        else:
            p = self.pad
            world[:] = self.background[
                p + off[1] : p + off[1] + self.world_h, p + off[0] : p + off[0] + self.res
            ]
        blue, red = game.champs
        for c in (red, blue):
            if c.alive and c.r_fx:
                _stamp(world, *self.to_pixel(c.x, c.y, off), self.m_r, C[f"r{c.team}"])
        self._tower_bars(world, game, off)
        self._minions(world, game, off)
        if red.alive:
            self._champion(world, red, off, C["enemy"], C["hp_enemy"])
        for p in game.projectiles:
            _stamp(world, *self.to_pixel(p[1], p[2], off), self.m_q, C[f"q{p[0]}"])
        if blue.alive:
            self._champion(world, blue, off, PLAYER_COLOUR, C["hp_ally"])
        self._hud(frame[self.world_h :], blue)
        return frame

    def _sync_towers(self, game: Game) -> None:
        """Keep the towers (standing or rubble) painted into the background; redraw on change."""
        off = (0, 0) if self.camera == "fixed" else (-self.pad, -self.pad)
        h, c, bw, bh = self.tower // 2, self.core // 2, self.bar_champ, self.bar_h
        for t in range(2):
            up = game.tower_hp[t] > 0
            if self._tower_up[t] == up:
                continue
            self._tower_up[t] = up
            cx, cy = self.to_pixel(*TOWER_POS[t], off)
            y0, x0 = cy - h - 1 - bh, cx - max(h, bw // 2)
            y1, x1 = cy + h, cx + max(h, bw // 2)
            self.background[y0:y1, x0:x1] = self._bg_plain[y0:y1, x0:x1]
            if not up:
                _fill(self.background, cx - h, cy - h // 2, cx + h, cy + h, C["rubble"])
                continue
            _fill(self.background, cx - h, cy - h, cx + h, cy + h, C[f"tower{t}"])
            _fill(self.background, cx - c, cy - c, cx + c, cy + c, C[f"core{t}"])
            col = C["hp_ally"] if t == 0 else C["hp_enemy"]
            _fill(self.background, cx - bw // 2, y0, cx + bw // 2, y0 + bh, col)

    def _tower_bars(self, img: np.ndarray, game: Game, off: tuple[int, int]) -> None:
        """Blank the lost part of each standing tower's HP bar (the full bar is in the background)."""
        h, bw, bh = self.tower // 2, self.bar_champ, self.bar_h
        for t in range(2):
            hp = game.tower_hp[t]
            if hp <= 0 or hp >= TOWER_MAX_HP:
                continue
            cx, cy = self.to_pixel(*TOWER_POS[t], off)
            y0, x0 = cy - h - 1 - bh, cx - bw // 2
            _fill(img, x0 + round(bw * hp / TOWER_MAX_HP), y0, cx + bw // 2, y0 + bh, C["bar_bg"])

    def _minions(self, img: np.ndarray, game: Game, off: tuple[int, int]) -> None:
        """All minions in one scatter: body (melee square, smaller ranged square) plus HP bar.

        Every minion uses the same pixel offsets; palette entry ``_KEEP`` leaves a pixel as it was
        (the part of the melee footprint a ranged minion does not cover).
        """
        idx = np.flatnonzero(game.m_alive)
        if idx.size == 0:
            return
        h, w = img.shape[:2]
        cx = np.floor(game.m_x[idx] * self.kx).astype(np.int64) - off[0]
        cy = np.floor((WORLD_H - game.m_y[idx]) * self.ky).astype(np.int64) - off[1]
        if self.camera == "fixed":  # clamp centres so every sprite pixel lies inside the view
            np.minimum(np.maximum(cx, self.ms_ext, out=cx), w - 1 - self.ms_ext, out=cx)
            np.minimum(np.maximum(cy, self.ms_ext, out=cy), h - 1 - self.ms_ext, out=cy)
        team, kind = game.m_team[idx], game.m_kind[idx]
        fill = np.ceil(self.bar_minion * game.m_hp[idx] / _MINION_HP[kind])
        bar = np.where(self.ms_barx < fill[:, None], 4 + team[:, None], 6)
        pal = np.where(self.ms_isbar, bar, self.ms_body[kind, team])
        ys = cy[:, None] + self.ms_y
        xs = cx[:, None] + self.ms_x
        flat = img.reshape(-1, 3)
        if self.camera != "fixed":
            ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            ys, xs, pal = ys[ok], xs[ok], pal[ok]
        pos = ys * w + xs
        colours = self.ms_palette[pal]
        keep = pal == _KEEP
        if keep.any():
            colours[keep] = flat[pos[keep]]
        flat[pos] = colours

    def _champion(self, img: np.ndarray, c: Champion, off: tuple[int, int], body, hp_col) -> None:
        cx, cy = self.to_pixel(c.x, c.y, off)
        if c.recall_t:
            _stamp(img, cx, cy, self.m_ring, C["recall"])
        elif c.shield > 0:
            _stamp(img, cx, cy, self.m_ring, C["shield"])
        bw, bh, r = self.bar_champ, self.bar_h, self.m_ring.shape[0] // 2
        x0 = cx - bw // 2
        y_mana = cy - r - 1 - bh
        y_hp = y_mana - bh
        _fill(img, x0, y_hp, x0 + bw, y_mana + bh, C["bar_bg"])
        _fill(img, x0, y_hp, x0 + math.ceil(bw * c.hp / c.max_hp), y_hp + bh, hp_col)
        _fill(img, x0, y_mana, x0 + math.ceil(bw * c.mana / c.max_mana), y_mana + bh, C["mana"])
        if c.recall_t:
            _fill(
                img,
                x0,
                y_hp - bh,
                x0 + math.ceil(bw * c.recall_t / RECALL_FRAMES),
                y_hp,
                C["recall"],
            )
        _stamp(img, cx, cy, self.m_champ, body)

    def _text(self, img: np.ndarray, x: int, y: int, text: str, colour) -> None:
        f = self.font
        for ch in text:
            g = self.glyphs[ch]
            sub = img[y : y + 5 * f, x : x + 3 * f]
            sub[g[: sub.shape[0], : sub.shape[1]]] = colour
            x += 4 * f

    def _hud(self, hud: np.ndarray, p: Champion) -> None:
        """Draw the HUD; the strip is cached and redrawn only when a visible quantity changes."""
        # Integer ceil(cd / COOLDOWN · icon height) per icon: rows darkened from the top.
        dark = tuple(-((-cd * self.icon_h) // full) for cd, full in zip(p.cd, COOLDOWN))
        recall = -((-p.recall_t * self.icon_h) // RECALL_FRAMES)
        bars = (
            math.ceil(self.bar_w * p.hp / p.max_hp),
            math.ceil(self.bar_w * p.mana / p.max_mana),
        )
        key = (dark, recall, bars, p.potions, min(p.level, 99), min(int(p.gold), 99999))
        if key != self._hud_key:
            self._hud_key, self._hud_cache = key, self._draw_hud(*key)
        hud[:] = self._hud_cache

    def _draw_hud(self, dark, recall, bars, potions, level, gold) -> np.ndarray:
        hud = self.hud_static.copy()
        for rows, (x0, y0, x1, _) in zip(dark, self.icons):
            hud[y0 : y0 + rows, x0:x1] = self.hud_dark[y0 : y0 + rows, x0:x1]
        x0, y0, x1, y1 = self.icons[6]
        for j in range(3):
            px = x0 + 2 * j * self.pip
            hud[y1 - self.pip : y1, px : px + self.pip] = C["text"] if j < potions else C["pip_off"]
        if recall:
            x0, y0, x1, y1 = self.icons[7]
            hud[y1 - recall : y1, x0:x1] = C["recall"]
        self._text(hud, *self.level_xy, f"{level:02d}", C["text"])
        self._text(hud, *self.gold_xy, f"{gold:05d}", C["gold"])
        for (x0, y0, x1, y1), n, col in (
            (self.hp_bar, bars[0], C["hp_ally"]),
            (self.mana_bar, bars[1], C["mana"]),
        ):
            hud[y0:y1, x0:x1] = C["bar_bg"]
            hud[y0:y1, x0 : x0 + n] = col
        return hud
