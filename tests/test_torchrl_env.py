"""DreamTorchEnv: TorchRL specs, partial resets through ``_reset``, collectors, head rewards."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.data import Binary, Categorical
from torchrl.envs.utils import check_env_specs
from worldmodel_fixture import make_world_model

from lol_dreamer.envs.torchrl_env import DreamTorchEnv

N = 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl")
    return {
        "dyn": make_world_model(root / "dyn"),
        "agent": make_world_model(root / "agent", heads=True),
    }


def _action(n: int, seed: int) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            "action": TensorDict(
                {
                    "move": torch.randint(0, 19, (n,), generator=g),
                    "keys": torch.randint(0, 2, (n, 8), generator=g).to(torch.int8),
                },
                batch_size=[n],
            )
        },
        batch_size=[n],
    )


@pytest.mark.parametrize(("kind", "decode"), [("agent", True), ("agent", False), ("dyn", True)])
def test_check_env_specs(folders, kind, decode):
    env = DreamTorchEnv(str(folders[kind]), num_envs=N, decode=decode)
    check_env_specs(env, seed=0)
    spec = env.full_action_spec
    assert isinstance(spec["action", "move"], Categorical) and spec["action", "move"].space.n == 19
    assert isinstance(spec["action", "keys"], Binary) and spec["action", "keys"].shape == (N, 8)
    obs = env.full_observation_spec
    assert ("pixels" in obs) == decode
    assert obs["latent"].shape == (N, 8, 8)
    assert ("agent_features" in obs) == (kind == "agent")
    assert env.full_reward_spec["reward"].shape == (N, 1)
    assert env.batch_size == torch.Size([N])


def test_rewards_are_head_predictions_and_decode_off_skips_pixels(folders):
    env = DreamTorchEnv(str(folders["agent"]), num_envs=N, decode=False)
    env.set_seed(0)
    td = env.reset()
    assert "pixels" not in td and env.dream.decoder is None
    out = env.step(td.update(_action(N, 0)))["next"]
    expected = env.wm.reward(out["agent_features"])
    torch.testing.assert_close(out["reward"][:, 0], expected)
    assert out["reward"].shape == (N, 1) and out["done"].dtype == torch.bool


def test_partial_reset_only_touches_masked_envs(folders):
    a = DreamTorchEnv(str(folders["agent"]), num_envs=N)
    b = DreamTorchEnv(str(folders["agent"]), num_envs=N)
    for env in (a, b):
        env.set_seed(3)
        current = env.step(env.reset().update(_action(N, 0)))["next"]  # full reset, one step
    mask = torch.tensor([True, False, False, True])
    before = b.dream.latent.clone()
    assert torch.equal(current["latent"], before)
    td = b.reset(current.clone().set("_reset", mask[:, None]))
    assert torch.equal(td["latent"][~mask], before[~mask])
    assert not torch.equal(td["latent"][mask], before[mask])
    for t in range(1, 4):
        oa = a.step(TensorDict({}, batch_size=[N]).update(_action(N, t)))["next"]
        ob = b.step(TensorDict({}, batch_size=[N]).update(_action(N, t)))["next"]
        assert torch.equal(oa["pixels"][~mask], ob["pixels"][~mask])
        assert torch.equal(oa["reward"][~mask], ob["reward"][~mask])
        assert not torch.equal(oa["latent"][mask], ob["latent"][mask])


def test_truncation_and_collector_resets(folders):
    env = DreamTorchEnv(str(folders["dyn"]), num_envs=N, max_episode_steps=3, decode=False)
    env.set_seed(0)
    collector = Collector(env, policy=None, frames_per_batch=N * 5, total_frames=N * 10)
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2
    for batch in batches:
        assert batch.batch_size == torch.Size([N, 5])
        assert not batch["next", "terminated"].any()  # no heads: never terminates
    steps = torch.cat([b["next", "truncated"][..., 0] for b in batches], dim=1)  # N x 10
    # Every env truncates after 3 steps and is reset by the collector: steps 3, 6, 9.
    assert steps[:, [2, 5, 8]].all() and steps.sum() == 3 * N


def test_reset_all_draws_seeded_starts(folders):
    env = DreamTorchEnv(str(folders["dyn"]), num_envs=N)
    env.set_seed(11)
    l1 = env.reset()["latent"]
    env.set_seed(11)
    l2 = env.reset()["latent"]
    assert torch.equal(l1, l2)


def test_bfloat16_dynamics(folders):
    """bf16 autocast dynamics (the GPU setting) keeps the specs and stays close to fp32."""
    env32 = DreamTorchEnv(str(folders["agent"]), num_envs=2, decode=False)
    env16 = DreamTorchEnv(str(folders["agent"]), num_envs=2, decode=False, dtype="bfloat16")
    assert env16.dream.sampler.dtype == torch.bfloat16
    check_env_specs(env16, seed=0)
    outs = []
    for env in (env32, env16):
        env.set_seed(0)
        td = env.reset().update(_action(2, 0))
        outs.append(env.step(td)["next"]["latent"])
    assert outs[1].dtype == torch.float32
    assert (outs[0] - outs[1]).abs().mean() < 0.1 * outs[0].abs().mean()
    with pytest.raises(ValueError, match="dtype must be one of"):
        DreamTorchEnv(str(folders["agent"]), num_envs=2, dtype="float16")


def test_sharded_env_passes_specs_and_resets_only_masked_envs(folders):
    env = DreamTorchEnv(str(folders["agent"]), num_envs=N, shards=2)
    check_env_specs(env, seed=0)
    env.set_seed(3)
    current = env.step(env.reset().update(_action(N, 0)))["next"]
    before = env.dream.latent.clone()
    mask = torch.tensor([False, True, True, False])  # one row in each shard
    td = env.reset(current.clone().set("_reset", mask[:, None]))
    assert torch.equal(td["latent"][~mask], before[~mask])
    assert not torch.equal(td["latent"][mask], before[mask])
    out = env.step(td.update(_action(N, 1)))["next"]
    torch.testing.assert_close(out["reward"][:, 0], env.wm.reward(out["agent_features"]))
