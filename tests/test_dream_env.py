"""DreamEnv (LoLDream-v0): Gymnasium contract, determinism, starts, rewards and episode ends."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from worldmodel_fixture import make_world_model, synthetic_frames

import lol_dreamer
from lol_dreamer.actions import noop_action
from lol_dreamer.envs.dream import NO_REWARD, REWARD_HEAD, DreamEnv
from lol_dreamer.envs.dream_batch import to_uint8_frames


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dream")
    return {
        "dyn": make_world_model(root / "dyn", heads=False),
        "agent": make_world_model(root / "agent", heads=True),
        "ends": make_world_model(root / "ends", heads=True, continue_bias=-6.0),
    }


def _actions(n: int, seed: int = 0) -> list[np.ndarray]:
    space = lol_dreamer.action_space()
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def _rollout(env: gym.Env, seed: int, actions: list[np.ndarray], options=None):
    obs, info = env.reset(seed=seed, options=options)
    frames, rewards = [obs], []
    for a in actions:
        obs, r, _term, _trunc, _ = env.step(a)
        frames.append(obs)
        rewards.append(r)
    return np.stack(frames), np.array(rewards), info


@pytest.mark.parametrize("kind", ["dyn", "agent"])
def test_check_env_passes(folders, kind):
    env = gym.make("LoLDream-v0", checkpoint=str(folders[kind]), render_mode="rgb_array").unwrapped
    check_env(env, skip_render_check=False)
    assert env.observation_space == gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    assert env.action_space == lol_dreamer.action_space()


def test_registered_ids(folders):
    for env_id in ("LoLDream-v0", "lol_dreamer:LoLDream-v0"):
        env = gym.make(env_id, checkpoint=str(folders["dyn"]))
        assert isinstance(env.unwrapped, DreamEnv)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (16, 16, 3) and obs.dtype == np.uint8


def test_same_seed_same_dream_and_other_seed_differs(folders):
    env = DreamEnv(checkpoint=str(folders["agent"]))
    acts = _actions(6)
    f1, r1, i1 = _rollout(env, 7, acts)
    f2, r2, i2 = _rollout(env, 7, acts)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(r1, r2)
    assert i1 == i2
    f3, _, _ = _rollout(env, 8, acts)
    assert not np.array_equal(f1[1:], f3[1:])
    # A fresh env with the same seed dreams the same too.
    f4, r4, _ = _rollout(DreamEnv(checkpoint=str(folders["agent"])), 7, acts)
    np.testing.assert_array_equal(f1, f4)
    np.testing.assert_array_equal(r1, r4)


def test_actions_change_the_dream(folders):
    env = DreamEnv(checkpoint=str(folders["dyn"]))
    a, b = _actions(4, 0), _actions(4, 1)
    fa, _, _ = _rollout(env, 3, a)
    fb, _, _ = _rollout(env, 3, b)
    np.testing.assert_array_equal(fa[0], fb[0])  # same start
    assert not np.array_equal(fa[1:], fb[1:])


def test_no_returned_buffer_is_reused(folders):
    env = DreamEnv(checkpoint=str(folders["dyn"]), render_mode="rgb_array")
    obs0, _ = env.reset(seed=0)
    keep0 = obs0.copy()
    obs1, *_ = env.step(noop_action())
    keep1 = obs1.copy()
    frame = env.render()
    frame[:] = 0
    obs2, *_ = env.step(noop_action())
    np.testing.assert_array_equal(obs0, keep0)
    np.testing.assert_array_equal(obs1, keep1)
    assert not np.shares_memory(obs1, obs2) and not np.shares_memory(obs0, obs1)
    np.testing.assert_array_equal(env.render(), obs2)


def test_frames_are_the_streaming_decode_of_the_latent_sequence(folders):
    """The env's frames equal a full-clip decode of start latents + generated latents."""
    env = DreamEnv(checkpoint=str(folders["dyn"]))
    obs, info = env.reset(seed=4)
    wm = env.wm
    lat = [wm.starts.latents[info["start_index"]].float()]
    frames = [obs]
    for a in _actions(3):
        obs, *_ = env.step(a)
        lat.append(env.latent[None])
        frames.append(obs)
    z = torch.cat(lat)[None]
    ref = to_uint8_frames(wm.tokenizer.decode(z)[0]).numpy()
    c = wm.starts.context
    diff = np.abs(ref[c - 1 :].astype(int) - np.stack(frames).astype(int))
    assert diff.max() <= 1


def test_options_start_frames_and_latents(folders):
    env = DreamEnv(checkpoint=str(folders["agent"]))
    frames = synthetic_frames(1, 5, 16, seed=3)[0].numpy()
    acts = np.stack(_actions(5))
    o1, info = env.reset(seed=1, options={"start": frames, "actions": acts, "task": "push"})
    assert info["start_index"] == -1 and info["task"] == "push"
    s1, *_ = env.step(acts[0])
    latents = env.wm.encode_frames(torch.from_numpy(frames)[None])[0].numpy()
    o2, _ = env.reset(seed=1, options={"start": latents, "actions": acts, "task": "push"})
    s2, *_ = env.step(acts[0])
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(s1, s2)
    o3, _ = env.reset(seed=1, options={"start": frames})  # unlabeled context
    assert o3.shape == (16, 16, 3)
    with pytest.raises(ValueError, match="resize them to the model resolution"):
        env.reset(options={"start": np.zeros((2, 8, 8, 3), np.uint8)})
    with pytest.raises(ValueError, match="options\\['start'\\] must be"):
        env.reset(options={"start": np.zeros((2, 5, 8), np.float32)})
    with pytest.raises(ValueError, match="options\\['actions'\\]"):
        env.reset(options={"start": frames, "actions": acts[:2]})


def test_reward_source_and_head_reward(folders):
    env = DreamEnv(checkpoint=str(folders["agent"]))
    _, info = env.reset(seed=0)
    assert info["reward_source"] == REWARD_HEAD
    _, r, _, _, info = env.step(noop_action())
    assert info["reward_source"] == REWARD_HEAD
    expected = float(env.wm.reward(env.agent_features[None])[0])
    assert r == pytest.approx(expected) and r != 0.0
    env = DreamEnv(checkpoint=str(folders["dyn"]))
    _, info = env.reset(seed=0)
    assert info["reward_source"] == NO_REWARD
    _, r, term, _, info = env.step(noop_action())
    assert r == 0.0 and term is False and info["reward_source"].startswith("none")


def test_continue_head_terminates_and_time_limit_truncates(folders):
    env = DreamEnv(checkpoint=str(folders["ends"]))
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(noop_action())
    assert term is True and trunc is False and info["continue_prob"] < 0.5
    env = DreamEnv(checkpoint=str(folders["agent"]), max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(noop_action())[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    assert all(type(f) is bool for pair in flags for f in pair)


def test_task_and_k_and_bad_inputs(folders):
    env = DreamEnv(
        checkpoint=str(folders["agent"]), task="fight", steps_per_frame=2, context_length=4
    )
    _, info = env.reset(seed=0)
    assert info["task"] == "fight" and env.batch.k == 2 and env.context_length == 4
    with pytest.raises(ValueError, match="action must have shape"):
        env.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="unknown task"):
        DreamEnv(checkpoint=str(folders["agent"]), task="jungle")
    with pytest.raises(RuntimeError, match="reset"):
        DreamEnv(checkpoint=str(folders["agent"])).step(noop_action())


def test_torch_threads_option(folders):
    before = torch.get_num_threads()
    try:
        DreamEnv(checkpoint=str(folders["dyn"]), torch_threads=1)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        DreamEnv(checkpoint=str(folders["dyn"]), torch_threads=None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_human_render_opens_a_pygame_window(folders):
    env = DreamEnv(checkpoint=str(folders["dyn"]), render_mode="human")
    env.reset(seed=0)
    assert env._window is not None and env._window.get_size() == (64, 64)
    assert env.render() is None
    env.step(noop_action())
    env.close()
    assert env._window is None
