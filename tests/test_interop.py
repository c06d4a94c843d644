"""Third-party RL libraries drive LoLDream-v0 / LoLLane-v0 unchanged: SB3 PPO and TorchRL collectors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from worldmodel_fixture import make_world_model

import lol_dreamer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_world_model(tmp_path_factory.mktemp("interop") / "wm", heads=True)


def _ppo_learns(env: gym.Env, steps: int, log_dir) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure

    model = PPO(
        "MlpPolicy",
        env,
        n_steps=64,
        batch_size=32,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [16]},
    )
    model.set_logger(configure(str(log_dir), []))  # SB3 would otherwise litter the temp dir
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=steps)
    assert model.num_timesteps >= steps
    after = list(model.policy.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))  # gradient steps happened
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action, dtype=np.int64))


def test_sb3_ppo_on_the_dream(folder, tmp_path):
    env = gym.make("LoLDream-v0", checkpoint=str(folder), max_episode_steps=50)
    _ppo_learns(env, 128, tmp_path)


def test_sb3_ppo_on_lanesim(tmp_path):
    env = gym.make("LoLLane-v0", res=64, max_steps=100)
    _ppo_learns(env, 192, tmp_path)


def test_torchrl_gymenv_collector_on_the_dream(folder):
    from torchrl.collectors import Collector
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import check_env_specs

    check_env_specs(GymEnv("LoLDream-v0", checkpoint=str(folder)), seed=0)
    # MultiDiscrete arrives as one-hot (19 + 8·2 = 35) by default, as index rows [9] on request.
    env = GymEnv(
        "LoLDream-v0", checkpoint=str(folder), max_episode_steps=4, categorical_action_encoding=True
    )
    collector = Collector(env, policy=None, frames_per_batch=6, total_frames=12)
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2
    for b in batches:
        assert b["pixels"].shape == (6, 16, 16, 3) and b["pixels"].dtype == torch.uint8
        assert b["action"].shape == (6, 9)
    trunc = torch.cat([b["next", "truncated"] for b in batches]).flatten()
    assert trunc.nonzero().flatten().tolist() == [3, 7, 11]


def test_native_env_collector_with_policy_actor(folder):
    """The native batched env under a Collector with the world model's own policy head acting."""
    from torchrl.collectors import Collector

    from lol_dreamer.envs.torchrl_env import DreamTorchEnv
    from lol_dreamer.policy import Policy

    wm = lol_dreamer.load_world_model(folder)
    env = DreamTorchEnv(world_model=wm, num_envs=4, decode=False, max_episode_steps=5)
    actor = Policy(wm.heads, seed=0).as_torchrl_actor()
    collector = Collector(
        env,
        policy=actor,
        frames_per_batch=16,
        total_frames=32,
        auto_register_policy_transforms=False,
    )
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2 and batches[0].batch_size == torch.Size([4, 4])
    move = torch.cat([b["action", "move"] for b in batches], 1)
    assert move.dtype == torch.int64 and bool(((move >= 0) & (move < 19)).all())
    assert "pixels" not in batches[0] and batches[0]["agent_features"].shape == (4, 4, 32)
