"""The scripted LaneSim player: valid, seeded, skill knob, and clearly better than random per task."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from lol_dreamer.actions import TASKS, action_space
from lol_dreamer.envs.lane.brain import decide
from lol_dreamer.envs.lane.env import LaneEnv
from lol_dreamer.envs.lane.scripted import ScriptedPlayer

SEEDS = range(8)
STEPS = {"farm": 400, "fight": 500, "push": 800}  # push needs a wave to reach the tower
MARGIN = {"farm": 2.0, "fight": 1.0, "push": 0.8}


def _episode_return(task: str, seed: int, policy: str) -> float:
    env = LaneEnv(task=task, max_steps=STEPS[task])
    env.reset(seed=seed)
    bot = ScriptedPlayer(task, seed=seed)
    space = action_space()
    space.seed(seed)
    total, done = 0.0, False
    while not done:
        a = bot.act(env) if policy == "scripted" else space.sample()
        rewards, term, trunc, _ = env.advance(a)  # same game and rewards as step(), no frame
        total += float(rewards[env.task])
        done = term or trunc
    return total


@pytest.mark.parametrize("task", TASKS)
def test_scripted_player_beats_random(task):
    scripted = [_episode_return(task, s, "scripted") for s in SEEDS]
    random = [_episode_return(task, s, "random") for s in SEEDS]
    assert np.mean(scripted) > np.mean(random) + MARGIN[task], (scripted, random)
    assert sum(a > b for a, b in zip(scripted, random)) >= len(SEEDS) // 2


def test_scripted_actions_are_valid_and_seeded():
    space = action_space()

    def run(seed):
        env = LaneEnv(task="fight", max_steps=200)
        env.reset(seed=3)
        bot = ScriptedPlayer("fight", skill=0.3, seed=seed)
        out = []
        for _ in range(200):
            a = bot.act(env)
            assert a.dtype == np.int64 and a.shape == (9,) and space.contains(a)
            out.append(a)
            if any(env.step(a)[2:4]):
                break
        return np.stack(out)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


@pytest.mark.parametrize(("skill", "delay"), [(1.0, 0), (0.0, 6)])
def test_skill_sets_noise_and_reaction_delay(skill, delay):
    bot = ScriptedPlayer("farm", skill=skill, seed=0)
    assert bot.delay == delay and bot.epsilon == pytest.approx(0.4 * (1.0 - skill))
    env = LaneEnv(task="farm")
    env.reset(seed=0)
    bot.reset(seed=0)
    noisy = 0
    for _ in range(300):
        hist = env.game.history
        mem = copy.deepcopy(bot.mem)
        expected = decide(hist[max(0, len(hist) - 1 - delay)], 0, "farm", mem)
        a = bot.act(env)
        noisy += not np.array_equal(a, expected)
        env.step(a)
    if skill == 1.0:
        assert noisy == 0  # acts on the current state, never randomly
    else:
        assert 0.25 < noisy / 300 < 0.55  # about 40% random actions


def test_scripted_player_rejects_bad_arguments():
    with pytest.raises(ValueError, match="task"):
        ScriptedPlayer("jungle")
    with pytest.raises(ValueError, match="skill"):
        ScriptedPlayer("farm", skill=1.5)


def _actions(bot: ScriptedPlayer, steps: int = 300) -> np.ndarray:
    env = LaneEnv(task="farm", max_steps=steps)
    env.reset(seed=4)
    out = []
    for _ in range(steps):
        a = bot.act(env)
        out.append(a)
        if any(env.step(a)[2:4]):
            break
    return np.stack(out)


def test_wander_zero_is_the_player_without_the_option():
    np.testing.assert_array_equal(
        _actions(ScriptedPlayer("farm", seed=7)),
        _actions(ScriptedPlayer("farm", seed=7, wander=0.0)),
    )


def test_wander_bouts_hold_one_random_direction():
    from lol_dreamer.actions import STAND
    from lol_dreamer.envs.lane.scripted import WANDER_FRAMES

    lo, hi = WANDER_FRAMES
    # wander = 1: every frame outside a bout starts one, so the episode is a chain of bouts.
    bot = ScriptedPlayer("farm", skill=1.0, seed=3, wander=1.0)
    env = LaneEnv(task="farm", max_steps=300)
    env.reset(seed=4)
    lengths, moves, cur = [], [], 0
    for _ in range(300):
        a = bot.act(env)
        moves.append(int(a[0]))
        cur += 1
        if bot.bout_left == 0:  # this frame ended a bout
            lengths.append(cur)
            assert len(set(moves[-cur:])) == 1  # one direction held through the bout
            cur = 0
        if any(env.step(a)[2:4]):
            break
    assert STAND not in moves and len(set(moves)) > 5  # directions vary between bouts
    assert len(lengths) > 10 and min(lengths) >= lo and max(lengths) <= hi
    # A small wander rate mixes bouts into the brain's play: it changes the actions.
    plain = _actions(ScriptedPlayer("farm", skill=1.0, seed=3), 300)
    mixed = _actions(ScriptedPlayer("farm", skill=1.0, seed=3, wander=0.05), 300)
    n = min(len(plain), len(mixed))
    assert not np.array_equal(plain[:n], mixed[:n])
    with pytest.raises(ValueError, match="wander"):
        ScriptedPlayer("farm", wander=1.5)
