"""DreamVectorEnv: make_vec, Gymnasium autoreset semantics, partial resets that leave other dreams alone."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from worldmodel_fixture import make_world_model

import lol_dreamer
from lol_dreamer.envs.dream_batch import to_uint8_frames
from lol_dreamer.envs.dream_vector import DreamVectorEnv

N = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_world_model(tmp_path_factory.mktemp("vec") / "wm", heads=True)


@pytest.fixture(scope="module")
def start_frames(folder):
    """The first observation of every start clip: decoded last context frame, ``uint8 [S, H, W, 3]``."""
    wm = lol_dreamer.load_world_model(folder)
    return to_uint8_frames(wm.tokenizer.decode(wm.starts.latents.float())[:, -1]).numpy()


def _is_start_frame(obs: np.ndarray, start_frames: np.ndarray) -> bool:
    return bool(
        (
            np.abs(start_frames.astype(int) - obs.astype(int)).reshape(len(start_frames), -1).max(1)
            <= 1
        ).any()
    )


def _acts(steps: int, seed: int = 0) -> np.ndarray:
    space = gym.vector.utils.batch_space(lol_dreamer.action_space(), N)
    space.seed(seed)
    return np.stack([space.sample() for _ in range(steps)])


def test_make_vec_builds_the_native_vector_env(folder):
    env = gym.make_vec(
        "LoLDream-v0",
        num_envs=N,
        vectorization_mode="vector_entry_point",
        checkpoint=str(folder),
        max_episode_steps=5,
    )
    assert isinstance(env, DreamVectorEnv)
    assert env.num_envs == N and env.max_episode_steps == 5
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP == env.autoreset_mode
    assert env.single_observation_space == gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    assert env.observation_space.shape == (N, 16, 16, 3)
    assert env.single_action_space == lol_dreamer.action_space()
    obs, info = env.reset(seed=0)
    assert obs.shape == (N, 16, 16, 3) and obs.dtype == np.uint8 and info["_task"].all()
    obs, rew, term, trunc, info = env.step(env.action_space.sample())
    assert rew.shape == (N,) and rew.dtype == np.float64
    assert (
        term.dtype == np.bool_ and trunc.dtype == np.bool_ and info["continue_prob"].shape == (N,)
    )


def test_same_seed_same_batch(folder):
    acts = _acts(4)
    runs = []
    for _ in range(2):
        env = DreamVectorEnv(N, checkpoint=str(folder))
        obs = [env.reset(seed=5)[0]]
        obs += [env.step(a)[0] for a in acts]
        runs.append(np.stack(obs))
    np.testing.assert_array_equal(*runs)


def test_next_step_autoreset(folder, start_frames):
    env = DreamVectorEnv(N, checkpoint=str(folder), max_episode_steps=2, autoreset_mode="NextStep")
    acts = _acts(4)
    env.reset(seed=0)
    env.step(acts[0])
    # Restart env 1 alone so the envs finish at different steps.
    obs, _ = env.reset(options={"reset_mask": np.array([False, True, False])})
    _, r, term, trunc, _ = env.step(acts[1])
    assert trunc.tolist() == [True, False, True] and not term.any()
    final = env._obs.copy()
    obs, r, term, trunc, _ = env.step(acts[2])
    # Envs 0 and 2 come back reset (action ignored, reward 0, flags False); env 1 finishes now.
    assert r[0] == 0.0 and r[2] == 0.0 and r[1] != 0.0
    assert trunc.tolist() == [False, True, False] and not term.any()
    for i in (0, 2):
        assert _is_start_frame(obs[i], start_frames) and not np.array_equal(obs[i], final[i])
    obs, r, term, trunc, _ = env.step(acts[3])
    assert r[1] == 0.0 and _is_start_frame(obs[1], start_frames) and not trunc.any()


def test_same_step_autoreset_matches_disabled_final_obs(folder, start_frames):
    acts = _acts(2)
    same = DreamVectorEnv(
        N, checkpoint=str(folder), max_episode_steps=2, autoreset_mode=AutoresetMode.SAME_STEP
    )
    off = DreamVectorEnv(
        N, checkpoint=str(folder), max_episode_steps=2, autoreset_mode=AutoresetMode.DISABLED
    )
    same.reset(seed=1)
    off.reset(seed=1)
    for a in acts:
        obs_s, r_s, _, trunc_s, info = same.step(a)
        obs_d, r_d, _, trunc_d, _ = off.step(a)
    np.testing.assert_array_equal(r_s, r_d)
    assert trunc_s.all() and trunc_d.all()
    assert info["_final_obs"].all() and info["_final_info"].all()
    for i in range(N):
        np.testing.assert_array_equal(info["final_obs"][i], obs_d[i])
        assert _is_start_frame(obs_s[i], start_frames)
    # The next step continues the new episodes: no reset step, rewards are real.
    _, r, _, trunc, _ = same.step(acts[0])
    assert not trunc.any() and (r != 0).all()


def test_disabled_requires_explicit_partial_reset(folder, start_frames):
    env = DreamVectorEnv(
        N, checkpoint=str(folder), max_episode_steps=1, autoreset_mode=AutoresetMode.DISABLED
    )
    env.reset(seed=0)
    env.step(_acts(1)[0])
    with pytest.raises(RuntimeError, match="reset_mask"):
        env.step(_acts(1)[0])
    obs, _info = env.reset(options={"reset_mask": np.array([True, True, True])})
    assert all(_is_start_frame(o, start_frames) for o in obs)
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.array([1, 0, 0])})


@pytest.mark.parametrize("shards", [1, 2])
def test_partial_reset_leaves_other_dreams_untouched(folder, start_frames, shards):
    acts = _acts(5, seed=3)
    a = DreamVectorEnv(N, checkpoint=str(folder), shards=shards)
    b = DreamVectorEnv(N, checkpoint=str(folder), shards=shards)
    a.reset(seed=9)
    b.reset(seed=9)
    for t in range(2):
        a.step(acts[t])
        b.step(acts[t])
    mask = np.array([False, True, False])
    obs_b, _ = b.reset(options={"reset_mask": mask})
    assert _is_start_frame(obs_b[1], start_frames)
    for t in range(2, 5):
        oa, ra, *_ = a.step(acts[t])
        ob, rb, *_ = b.step(acts[t])
        np.testing.assert_array_equal(oa[~mask], ob[~mask])
        np.testing.assert_array_equal(ra[~mask], rb[~mask])
        assert not np.array_equal(oa[1], ob[1])


def test_partial_reset_decoder_history_is_the_restarted_clip(folder):
    """After a partial reset, the restarted row decodes exactly like a full-clip decode of its latents."""
    env = DreamVectorEnv(N, checkpoint=str(folder))
    env.reset(seed=2)
    for a in _acts(2):
        env.step(a)
    mask = np.array([False, False, True])
    before = env.wm.starts
    # The start clip the reset will draw: replay the env's np_random on a copy.
    probe = np.random.Generator(np.random.PCG64())
    probe.bit_generator.state = env.np_random.bit_generator.state
    index = int(probe.integers(len(before), size=1)[0])
    obs, _ = env.reset(options={"reset_mask": mask})
    lat = [before.latents[index].float()]
    frames = [obs[2]]
    for a in _acts(3, seed=1):
        obs, *_ = env.step(a)
        lat.append(env.batch.latent[2:3])
        frames.append(obs[2])
    ref = to_uint8_frames(env.wm.tokenizer.decode(torch.cat(lat)[None])[0]).numpy()
    c = before.context
    assert np.abs(ref[c - 1 :].astype(int) - np.stack(frames).astype(int)).max() <= 1


def test_latent_observations_without_decoding(folder):
    env = DreamVectorEnv(N, checkpoint=str(folder), decode=False)
    assert env.batch.decoder is None
    obs, _ = env.reset(seed=0)
    assert obs.shape == (N, 8, 8) and obs.dtype == np.float32
    obs, *_ = env.step(_acts(1)[0])
    assert env.single_observation_space.contains(obs[0])
    with pytest.raises(ValueError, match="decode=True"):
        DreamVectorEnv(N, checkpoint=str(folder), decode=False, render_mode="rgb_array")


def test_out_of_range_actions_are_refused(folder):
    env = DreamVectorEnv(N, checkpoint=str(folder))
    env.reset(seed=0)
    bad = _acts(1)[0]
    bad[1, 0] = 19
    with pytest.raises(ValueError, match=r"movement must be 0\.\.18"):
        env.step(bad)
    with pytest.raises(ValueError, match=r"actions must be int \[3, 9\]"):
        env.step(bad[:2])
