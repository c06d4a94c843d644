"""LaneSim env contract, determinism and game mechanics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import lol_dreamer  # noqa: F401  (registers LoLLane-v0)
from lol_dreamer.actions import KEY_INDEX, STAND, TASKS, action_space, noop_action
from lol_dreamer.envs.lane import rules as G
from lol_dreamer.envs.lane.env import STATE_FIELDS, LaneEnv
from lol_dreamer.envs.lane.game import Game


def _press(key: str, move: int = STAND) -> np.ndarray:
    a = noop_action()
    a[0] = move
    a[KEY_INDEX[key]] = 1
    return a


def _quiet(env: LaneEnv) -> Game:
    """Remove minions and park the enemy champion dead, so only the player acts."""
    g = env.game
    g.m_alive[:] = False
    g.champs[1].dead_t = 10**6
    g.enemy_brain = None
    return g


@pytest.mark.filterwarnings("ignore:.*alternative render modes")
def test_check_env_passes():
    check_env(gym.make("LoLLane-v0").unwrapped)
    check_env(LaneEnv(task="fight", res=64, camera="follow"))


def test_spaces_match_the_canonical_action_space():
    env = LaneEnv(res=96)
    assert env.action_space == action_space()
    assert env.observation_space.shape == (96, 96, 3)
    assert env.observation_space.dtype == np.uint8


def test_same_seed_same_actions_give_identical_rollouts():
    def rollout():
        env = gym.make("LoLLane-v0", task="mixed", max_steps=150)
        rng = np.random.default_rng(7)
        obs, info = env.reset(seed=123)
        frames, rewards, infos = [obs], [], [info]
        done = False
        while not done:
            a = np.array([rng.integers(19), *(rng.random(8) < 0.1)], dtype=np.int64)
            obs, r, term, trunc, info = env.step(a)
            frames.append(obs)
            rewards.append((r, info["rewards"].copy()))
            infos.append(info)
            done = term or trunc
        return frames, rewards, infos

    f1, r1, i1 = rollout()
    f2, r2, i2 = rollout()
    assert len(f1) == len(f2) == 151
    assert all(np.array_equal(a, b) for a, b in zip(f1, f2))
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(r1, r2))
    for a, b in zip(i1, i2):
        assert a["task"] == b["task"]
        np.testing.assert_array_equal(LaneEnv.state_vector(a), LaneEnv.state_vector(b))
    # A different seed gives a different start.
    env = gym.make("LoLLane-v0")
    other, _ = env.reset(seed=124)
    assert not np.array_equal(other, f1[0])


def test_observations_are_fresh_arrays():
    env = LaneEnv()
    obs0, _ = env.reset(seed=0)
    obs1, *_ = env.step(noop_action())
    frame = env.render()
    assert obs0 is not obs1 and frame is not obs1
    np.testing.assert_array_equal(frame, obs1)
    obs1[:] = 0
    assert env.render().any()


def test_info_state_and_state_vector():
    env = LaneEnv(task="push")
    _, info = env.reset(seed=3)
    assert info["task"] == TASKS.index("push")
    assert info["rewards"].dtype == np.float32 and info["rewards"].shape == (3,)
    for name in (
        "px",
        "py",
        "hp",
        "mana",
        "gold",
        "level",
        *(f"cd_{k}" for k in ("Q", "W", "E", "R", "D", "F", "item", "B")),
    ):
        assert name in STATE_FIELDS
    v = LaneEnv.state_vector(info)
    assert v.dtype == np.float32 and v.shape == (len(STATE_FIELDS),)
    s = info["state"]
    assert v[STATE_FIELDS.index("gold")] == s["gold"]
    assert len(s["cooldowns"]) == 8 and all(0.0 <= c <= 1.0 for c in s["cooldowns"])
    assert 1 <= s["level"] <= 7 and 0 < s["hp"] <= s["max_hp"]


def test_mixed_task_draws_every_task_from_np_random():
    env = LaneEnv(task="mixed")
    seen = {env.reset(seed=s)[1]["task"] for s in range(30)}
    assert seen == {0, 1, 2}
    assert env.reset(seed=0, options={"task": "fight"})[1]["task"] == 1


def test_last_hit_pays_gold_and_farm_reward():
    env = LaneEnv(task="farm")
    env.reset(seed=0)
    g = _quiet(env)
    p = g.champs[0]
    p.atk_cd = 0
    gold = p.gold
    g._spawn_wave(1, 0.5)
    i = int(np.flatnonzero(g.m_alive & (g.m_kind == 0))[0])
    g.m_alive[:] = False
    g.m_alive[i] = True
    g.m_hp[i] = 1.0
    g.m_x[i], g.m_y[i] = p.x + 5.0, p.y
    _, r, *_, info = env.step(noop_action())
    assert p.gold == gold + G.MINION_GOLD[0]
    assert r == pytest.approx(G.MINION_GOLD[0] / 20.0)
    assert info["rewards"][0] == pytest.approx(G.MINION_GOLD[0] / 20.0)
    assert not g.m_alive.any()


def test_fight_reward_is_damage_dealt_minus_taken_and_death_terminates_fight():
    env = LaneEnv(task="fight")
    env.reset(seed=1)
    g = env.game
    g.m_alive[:] = False
    g.enemy_brain = None
    p, e = g.champs
    e.x, e.y = p.x + 6.0, p.y
    e.shield = 0.0
    p.atk_cd = 0
    ehp = e.hp
    _, r, term, _, _info = env.step(noop_action())  # stand → auto-attack the champion
    assert ehp - e.hp == pytest.approx(p.ad, abs=0.1)  # minus one frame of regeneration
    assert r == pytest.approx(p.ad / 100.0, rel=1e-5)
    p.hp, p.shield = 1.0, 0.0
    g.hurt_champ(p, 50.0, e)
    assert not p.alive
    _, _, term, trunc, _ = env.step(noop_action())
    assert term and not trunc
    env.reset(seed=1, options={"task": "farm"})
    env.game.hurt_champ(env.game.champs[0], 10**5)
    _, _, term, _, _ = env.step(noop_action())
    assert not term


def test_tower_destruction_terminates_and_truncation_at_max_steps():
    env = LaneEnv(task="push", max_steps=5)
    env.reset(seed=2)
    env.game.tower_hp[1] = 1.0
    env.game._hurt_tower(1, 5.0, env.game.champs[0])
    _, _r, term, trunc, _ = env.step(noop_action())
    assert term and not trunc
    env.reset(seed=2)
    flags = [env.step(noop_action())[2:4] for _ in range(5)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_recall_is_interrupted_by_damage_and_otherwise_teleports_home():
    env = LaneEnv()
    env.reset(seed=4)
    g = _quiet(env)
    p = g.champs[0]
    p.cd[7] = 0
    env.step(_press("B"))
    for _ in range(20):
        env.step(noop_action())
    assert p.recall_t > 0
    g.hurt_champ(p, 5.0)
    _, _, _, _, info = env.step(noop_action())
    assert p.recall_t == 0 and info["state"]["recall"] == 0.0
    assert info["state"]["cd_B"] > 0  # a cancelled recall has a short lockout
    # Undisturbed recall: after the channel the player is at the fountain with full HP.
    p.cd[7] = 0
    p.hp = 0.5 * p.max_hp
    x0, y0 = p.x, p.y
    env.step(_press("B"))
    for _ in range(G.RECALL_FRAMES):
        env.step(noop_action())
    assert (p.x, p.y) == G.BASE_POS[0] != (x0, y0)
    assert p.hp == p.max_hp and p.potions == G.POTION_MAX
    # Moving cancels the channel too.
    p.cd[7] = 0
    env.step(_press("B"))
    env.step(noop_action())
    env.step(np.array([0, 0, 0, 0, 0, 0, 0, 0, 0]))
    assert p.recall_t == 0


def test_potion_heals_and_charges_run_out():
    env = LaneEnv()
    env.reset(seed=5)
    g = _quiet(env)
    p = g.champs[0]
    p.potions = 3
    used = 0
    for _ in range(3 * (G.POTION_FRAMES + 2)):
        before = p.potions
        p.hp = 0.2 * p.max_hp
        env.step(_press("item"))
        used += before - p.potions
    assert used == 3 and p.potions == 0
    p.cd[6] = 0
    hp = p.hp
    _, _, _, _, info = env.step(_press("item"))
    assert p.potions == 0 and p.potion_t == 0 and info["state"]["potions"] == 0
    assert p.hp - hp < 1.0  # only base regeneration, no potion heal


def test_abilities_follow_their_rules():
    env = LaneEnv()
    env.reset(seed=6, options={"randomize": False})
    g = _quiet(env)
    p = g.champs[0]
    p.mana = p.max_mana
    x0 = p.x
    env.step(_press("E", move=0))  # dash to the right
    for _ in range(G.DASH_FRAMES):
        env.step(noop_action())
    assert p.x == pytest.approx(x0 + G.CHAMP_SPEED + G.DASH_FRAMES * G.DASH_STEP)
    x1 = p.x
    env.step(_press("D", move=0))
    assert p.x == pytest.approx(
        min(x1 + G.CHAMP_SPEED + G.FLASH_DIST, G.WORLD_W - G.CHAMP_RADIUS - 1)
    )
    env.step(_press("W"))
    assert p.shield > 0
    mana = p.mana
    env.step(_press("Q"))
    assert len(g.projectiles) == 1 and p.mana < mana
    cd = p.cd[0]
    env.step(_press("Q"))  # on cooldown: nothing happens
    assert p.cd[0] == cd - 1


def test_human_render_mode_draws_to_a_window_and_returns_none():
    env = gym.make("LoLLane-v0", render_mode="human", res=64, max_steps=3)
    env.reset(seed=0)
    env.step(noop_action())
    assert env.render() is None
    env.close()


def test_bad_arguments_raise_helpful_errors():
    with pytest.raises(ValueError, match="task"):
        LaneEnv(task="jungle")
    with pytest.raises(ValueError, match="render_mode"):
        LaneEnv(render_mode="ansi")
    env = LaneEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(noop_action())
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, dtype=np.int64))


def test_snapshots_are_not_changed_by_later_steps():
    env = LaneEnv()
    env.reset(seed=8, options={"randomize": False})
    p = env.game.champs[0]
    p.mana = p.max_mana
    before = env.game.history[-1]
    assert before.champs[0].cd[0] == 0
    a = noop_action()
    a[KEY_INDEX["Q"]] = 1
    env.step(a)
    assert before.champs[0].cd[0] == 0 and env.game.history[-1].champs[0].cd[0] > 0
