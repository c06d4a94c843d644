"""LaneSim rendering: shapes, the player detector, the HUD's cooldown display."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lol_dreamer.actions import KEY_INDEX, KEY_NAMES, STAND, noop_action
from lol_dreamer.envs.lane.detector import detect_player
from lol_dreamer.envs.lane.env import LaneEnv
from lol_dreamer.envs.lane.render import ICON_COLOURS, PLAYER_COLOUR, C, Renderer


def _random_states(env: LaneEnv, n_episodes: int, steps: int, seed: int):
    """Yield (frame, info) over episodes of biased-random play (long walks, some key presses)."""
    rng = np.random.default_rng(seed)
    for ep in range(n_episodes):
        frame, info = env.reset(seed=seed + ep)
        move = int(rng.integers(19))
        for _ in range(steps):
            if rng.random() < 0.1:
                move = int(rng.integers(19))
            a = np.array([move, *(rng.random(8) < 0.03)], dtype=np.int64)
            frame, _, term, trunc, info = env.step(a)
            yield frame, info
            if term or trunc:
                break


@pytest.mark.parametrize("res", [64, 128, 256])
def test_render_shapes(res):
    env = LaneEnv(res=res)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (res, res, 3) and obs.dtype == np.uint8
    obs, *_ = env.step(noop_action())
    assert obs.shape == (res, res, 3) and env.render().shape == (res, res, 3)
    assert env.renderer.world_h + env.renderer.hud_h == res


@pytest.mark.parametrize(
    ("res", "camera"), [(128, "fixed"), (128, "follow"), (64, "fixed"), (256, "fixed")]
)
def test_detector_matches_info_pixel_position(res, camera):
    env = LaneEnv(task="farm", res=res, camera=camera, max_steps=10**6)
    errors, missed, dead = [], 0, 0
    for i, (frame, info) in enumerate(_random_states(env, n_episodes=4, steps=400, seed=11)):
        if i % 4:
            continue
        s = info["state"]
        found = detect_player(frame)
        if s["dead"]:
            dead += 1
            assert found is None and s["px"] == -1.0
            continue
        if found is None:
            missed += 1
            continue
        errors.append(max(abs(found[0] - s["px"]), abs(found[1] - s["py"])))
    assert missed == 0
    assert len(errors) >= 300
    assert max(errors) <= 1.0
    if res == 128:
        assert max(errors) == 0.0  # the drawn disc is symmetric: the centroid is its centre


def test_player_colour_is_unique_and_hud_never_overlaps_the_world():
    assert PLAYER_COLOUR not in C.values() and PLAYER_COLOUR not in ICON_COLOURS
    for colour in (*C.values(), *ICON_COLOURS):
        assert max(abs(a - b) for a, b in zip(colour, PLAYER_COLOUR)) > 60
    env = LaneEnv(res=128)
    frame, _info = env.reset(seed=0)
    player = np.all(frame == PLAYER_COLOUR, axis=-1)
    assert player.sum() > 0 and not player[env.renderer.world_h :].any()


def test_detector_handles_noise_and_absence():
    env = LaneEnv(res=128)
    frame, info = env.reset(seed=9)
    rng = np.random.default_rng(0)
    noisy = np.clip(frame.astype(np.int16) + rng.integers(-20, 21, frame.shape), 0, 255).astype(
        np.uint8
    )
    x, y = detect_player(noisy)
    assert abs(x - info["state"]["px"]) <= 1.0 and abs(y - info["state"]["py"]) <= 1.0
    blank = np.zeros_like(frame)
    assert detect_player(blank) is None


@pytest.mark.parametrize("key", KEY_NAMES)
def test_using_an_ability_changes_its_hud_icon(key):
    env = LaneEnv(res=64)
    env.reset(seed=0, options={"randomize": False})
    g = env.game
    g.m_alive[:] = False
    g.champs[1].dead_t = 10**6
    g.enemy_brain = None
    p = g.champs[0]
    p.hp = 0.5 * p.max_hp
    before = env.step(noop_action())[0]
    a = noop_action()
    a[0] = STAND
    a[KEY_INDEX[key]] = 1
    after = env.step(a)[0]
    if key == "B":  # the recall icon fills while channelling
        for _ in range(10):
            after = env.step(noop_action())[0]
    r = env.renderer
    x0, y0, x1, y1 = r.icons[KEY_NAMES.index(key)]
    h0 = r.world_h
    region_before = before[h0 + y0 : h0 + y1, x0:x1]
    region_after = after[h0 + y0 : h0 + y1, x0:x1]
    assert not np.array_equal(region_before, region_after)
    # The other icons did not change, except the item pips for the potion.
    for k, (a0, b0, a1, b1) in enumerate(r.icons):
        if KEY_NAMES[k] != key:
            np.testing.assert_array_equal(
                before[h0 + b0 : h0 + b1, a0:a1], after[h0 + b0 : h0 + b1, a0:a1]
            )


def test_cooldown_darkening_shrinks_as_the_cooldown_runs_out():
    env = LaneEnv(res=128)
    env.reset(seed=0, options={"randomize": False})
    p = env.game.champs[0]
    p.mana = p.max_mana
    a = noop_action()
    a[KEY_INDEX["W"]] = 1
    r = env.renderer
    x0, y0, x1, y1 = r.icons[1]
    dark = []
    frame = env.step(a)[0]
    for _ in range(60):
        icon = frame[r.world_h + y0 : r.world_h + y1, x0:x1]
        dark.append(int(np.all(icon != ICON_COLOURS[1], axis=-1).sum()))
        frame = env.step(noop_action())[0]
    assert dark[0] == icon.shape[0] * icon.shape[1]  # fully dark right after the cast
    assert all(b <= a for a, b in itertools.pairwise(dark)) and dark[-1] < dark[0]


def test_renderer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="camera"):
        Renderer(128, camera="orbit")
    with pytest.raises(ValueError, match="res"):
        Renderer(16)


def test_destroyed_tower_turns_to_rubble_and_reset_restores_it():
    from lol_dreamer.envs.lane.rules import TOWER_POS

    env = LaneEnv(res=128)
    first, _ = env.reset(seed=0)
    g = env.game
    g.m_alive[:] = False
    g.champs[1].dead_t = 10**6
    g.enemy_brain = None
    g.tower_hp[1] = 0.0
    frame = env.step(noop_action())[0]
    cx, cy = env.renderer.to_pixel(*TOWER_POS[1], (0, 0))
    np.testing.assert_array_equal(frame[cy, cx], C["rubble"])
    again, _ = env.reset(seed=0)
    np.testing.assert_array_equal(again, first)


def test_hud_shows_gold_level_and_exact_hp_and_mana_bars():
    env = LaneEnv(res=128)
    env.reset(seed=0, options={"randomize": False})
    g = env.game
    p = g.champs[0]
    r = env.renderer
    hud = slice(r.world_h, None)

    def frame():
        return env.renderer.render(g)[hud]

    p.gold, p.level = 12345, 3
    a = frame()
    p.gold = 54321
    b = frame()
    p.level = 7
    c = frame()
    gx, gy = r.gold_xy
    lx, ly = r.level_xy
    gold_box = (slice(gy, gy + 5 * r.font), slice(gx, gx + 19 * r.font))
    level_box = (slice(ly, ly + 5 * r.font), slice(lx, lx + 7 * r.font))
    assert not np.array_equal(a[gold_box], b[gold_box]) and np.array_equal(
        a[level_box], b[level_box]
    )
    assert not np.array_equal(b[level_box], c[level_box]) and np.array_equal(
        b[gold_box], c[gold_box]
    )
    for frac in (0.1, 0.5, 0.93):
        p.hp, p.mana = frac * p.max_hp, (1 - frac) * p.max_mana
        f = frame()
        x0, y0, x1, _ = r.hp_bar
        green = np.all(f[y0, x0:x1] == C["hp_ally"], axis=-1).sum()
        x0, y0, x1, _ = r.mana_bar
        blue = np.all(f[y0, x0:x1] == C["mana"], axis=-1).sum()
        assert green == int(np.ceil((x1 - x0) * frac))
        assert blue == int(np.ceil((x1 - x0) * (1 - frac)))
