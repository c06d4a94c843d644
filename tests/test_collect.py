"""Collector: LaneSim end-to-end through the CLI, plus alignment/append/refusal checks on a toy env."""

from __future__ import annotations

import numpy as np
import pytest

from lol_dreamer.actions import TASKS
from lol_dreamer.cli import main
from lol_dreamer.data import open_dataset
from lol_dreamer.envs.collect import collect, episode_plan


def test_cli_collect_lanesim_round_trip(tmp_path, capsys):
    from lol_dreamer.envs.lane.env import STATE_FIELDS, LaneEnv

    out = tmp_path / "lane"
    argv = ["collect", "--out", str(out), "--episodes", "2", "--workers", "2", "--max-steps", "50"]
    assert main([*argv, "--res", "64", "--seed", "5", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert (
        "collected 2 episodes" in printed
        and str(out) in printed
        and "mean reward vector" in printed
    )
    ds = open_dataset(out)
    assert ds.names == ["ep_000000", "ep_000001"] and ds.tasks.tolist() == [
        0,
        1,
    ]  # mixed: round-robin
    for k, ep in enumerate(ds):
        t = len(ep) - 1  # actions taken; the final observation is stored after them
        assert 1 <= t <= 50 and ep.frames.shape == (t + 1, 64, 64, 3)
        assert ep.labeled[:t].all() and not ep.labeled[t]
        assert ep.actions[t].tolist() == [18, 0, 0, 0, 0, 0, 0, 0, 0]
        assert not ep.terminated[t] and not ep.rewards[t].any()
        assert (
            ep.state.shape == (t + 1, len(STATE_FIELDS)) and tuple(ep.state_fields) == STATE_FIELDS
        )
        assert ep.meta["source"] == "lanesim" and ep.meta["fps"] == 20.0
        plan = episode_plan(k, seed=5, task="mixed", skill=0.8, skill_jitter=0.1)
        assert (
            ep.meta["metadata"]["env_seed"] == plan["env_seed"] and TASKS[ep.task] == plan["task"]
        )
        assert (
            abs(ep.meta["metadata"]["skill"] - 0.8) <= 0.1 and ep.meta["metadata"]["wander"] == 0.0
        )
        # Replaying the stored actions in a fresh env reproduces every stored frame, state,
        # reward vector and terminal flag: the time alignment of the format, checked for real.
        env = LaneEnv(task=plan["task"], res=64, max_steps=50)
        obs, info = env.reset(seed=plan["env_seed"])
        for i in range(t):
            np.testing.assert_array_equal(ep.frames[i], obs)
            np.testing.assert_array_equal(ep.state[i], LaneEnv.state_vector(info))
            obs, r, term, trunc, info = env.step(ep.actions[i])
            np.testing.assert_array_equal(ep.rewards[i], info["rewards"])
            assert (
                r == pytest.approx(float(ep.rewards[i, ep.task])) and bool(ep.terminated[i]) == term
            )
        assert term or trunc
        np.testing.assert_array_equal(ep.frames[t], obs)  # the observation after the last action
        np.testing.assert_array_equal(ep.state[t], LaneEnv.state_vector(info))
        np.testing.assert_allclose(ep.meta["metadata"]["return"], ep.rewards.sum(0), rtol=1e-5)


def test_cli_collect_wander_adds_held_random_movement(tmp_path):
    out = tmp_path / "wander"
    argv = ["collect", "--out", str(out), "--episodes", "1", "--max-steps", "120", "--res", "64"]
    assert main([*argv, "--task", "farm", "--wander", "0.3", "--quiet"]) == 0
    plain_out = tmp_path / "plain"
    assert main([*argv, "--out", str(plain_out), "--task", "farm", "--quiet"]) == 0
    (ep,) = list(open_dataset(out))
    (plain,) = list(open_dataset(plain_out))
    assert ep.meta["metadata"]["wander"] == 0.3 and plain.meta["metadata"]["wander"] == 0.0
    # Same seeds, so the only difference is the option reaching the player: its actions change.
    n = min(len(ep), len(plain)) - 1
    assert not np.array_equal(ep.actions[:n], plain.actions[:n])
    assert main([*argv, "--out", str(tmp_path / "bad"), "--wander", "-0.1", "--quiet"]) == 1
    assert not (tmp_path / "bad" / "episodes").exists()


class ToyEnv:
    """A tiny env whose frames, state and rewards encode t, position and the last action."""

    STATE_FIELDS = ("t", "pos")

    def __init__(self, task: str, res: int, max_steps: int):
        self.res, self.max_steps = res, max_steps

    def reset(self, seed: int):
        self.t, self.pos = 0, int(np.random.default_rng(seed).integers(0, 50))
        return self._obs(), {"rewards": np.zeros(3, np.float32)}

    def _obs(self):
        f = np.zeros((self.res, self.res, 3), np.uint8)
        f[..., 0], f[..., 1] = self.t, self.pos
        return f

    def step(self, a):
        self.t += 1
        self.pos += int(a[0])
        rewards = np.array([a[0], a[1], self.t], np.float32)
        term = self.pos > 120
        return (
            self._obs(),
            float(rewards[0]),
            term,
            self.t >= self.max_steps and not term,
            {"rewards": rewards},
        )

    def state_vector(self, info):
        return np.array([self.t, self.pos], np.float32)


class ToyPlayer:
    def __init__(self, task: str, skill: float, seed: int):
        self.rng = np.random.default_rng(seed)

    def act(self, env):
        return np.array([self.rng.integers(0, 19), *self.rng.integers(0, 2, 8)], np.int64)


class BrokenEnv(ToyEnv):
    def reset(self, seed: int):
        if seed % 3 == 0:
            raise RuntimeError("env crashed")
        return super().reset(seed)


def toy(out, n, **kw):
    kw = {
        "res": 8,
        "max_steps": 30,
        "progress": False,
        "make_env": ToyEnv,
        "make_player": ToyPlayer,
    } | kw
    return collect(out, n, **kw)


def test_alignment_on_toy_env(tmp_path):
    s = toy(tmp_path, 4, task="mixed", seed=1)
    assert s.episodes == 4 and s.frames == open_dataset(tmp_path).total_frames
    ds = open_dataset(tmp_path)
    assert ds.tasks.tolist() == [0, 1, 2, 0]
    for ep in ds:
        f, a, st = ep.frames[:, 0, 0].astype(int), ep.actions, ep.state
        t = len(ep) - 1  # actions taken; frame t is the final observation
        assert f[:, 0].tolist() == list(range(t + 1)) and st[:, 0].tolist() == list(
            range(t + 1)
        )  # frame t, state t
        assert (f[1:, 1] == f[:-1, 1] + a[:-1, 0]).all()  # frame t+1 follows from action t
        assert ep.labeled[:t].all() and not ep.labeled[t]
        np.testing.assert_array_equal(
            ep.rewards[:t], np.stack([a[:t, 0], a[:t, 1], np.arange(1, t + 1)], 1)
        )
        assert not ep.rewards[t].any() and not ep.terminated[t]
        assert ep.terminated[: t - 1].sum() == 0 and bool(ep.terminated[t - 1]) == (
            st[t - 1, 1] + a[t - 1, 0] > 120
        )
        assert ep.terminated[t - 1] or t == 30
    farm = s.per_task["farm"]
    assert farm["episodes"] == 2
    want = np.mean([ds[i].rewards.sum(0) for i in (0, 3)], axis=0)
    np.testing.assert_allclose(farm["mean_rewards"], want, rtol=1e-6)
    assert farm["mean_return"] == pytest.approx(want[0])


def test_append_continues_the_same_stream(tmp_path):
    toy(tmp_path / "a", 3, seed=9)
    toy(tmp_path / "a", 2, seed=9)
    toy(tmp_path / "b", 5, seed=9)
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    assert a.names == b.names == [f"ep_{i:06d}" for i in range(5)]
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea.frames, eb.frames)
        np.testing.assert_array_equal(ea.actions, eb.actions)
    c = toy(tmp_path / "c", 2, seed=10)
    assert not np.array_equal(open_dataset(c.out)[0].actions[:5], a[0].actions[:5])


def test_refusals_and_failure_cleanup(tmp_path):
    toy(tmp_path / "ds", 1)
    with pytest.raises(ValueError, match="--res 8 to append"):
        toy(tmp_path / "ds", 1, res=16)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not a lol-dreamer dataset"):
        toy(tmp_path / "other", 1)
    with pytest.raises(ValueError, match="--task"):
        toy(tmp_path / "ds", 1, task="jungle")
    seeds = [
        episode_plan(k, seed=0, task="farm", skill=0.8, skill_jitter=0.1)["env_seed"]
        for k in range(1, 6)
    ]
    first_bad = next(i for i, s in enumerate(seeds) if s % 3 == 0)
    with pytest.raises(RuntimeError, match="env crashed"):
        toy(tmp_path / "ds", 5, task="farm", make_env=BrokenEnv)
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 1 + first_bad  # the finished episodes are indexed and readable
    leftovers = [p.name for p in (tmp_path / "ds" / "episodes").iterdir() if p.name.startswith(".")]
    assert leftovers == []
