"""Policy loading and acting: heads-only policies, TorchRL actors and frame → feature alignment."""

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from worldmodel_fixture import make_phase3_run, make_world_model, random_actions, synthetic_frames

from lol_dreamer.models.heads import AgentHeads, HeadsConfig
from lol_dreamer.policy import Policy, join_action, load_heads, load_policy, world_model_dir


def _trained_heads(dim=32):
    heads = AgentHeads(HeadsConfig.preset("test", dim=dim))
    with torch.no_grad():
        heads.policy.out.weight.normal_(0, 1.0)
    return heads


def test_policy_on_features_and_torchrl_actor():
    heads = _trained_heads()
    pol = Policy(heads, seed=3)
    h = torch.randn(5, 32)
    a = pol(h)
    assert a.shape == (5, 9) and a.dtype == torch.int64
    assert ((a[:, 0] >= 0) & (a[:, 0] < 19)).all() and ((a[:, 1:] == 0) | (a[:, 1:] == 1)).all()
    assert torch.equal(Policy(heads, seed=3)(h), a)  # seeded
    det = Policy(heads, deterministic=True, mtp_distance=1)
    assert torch.equal(det(h), heads.policy(h, 1).mode())
    flat = pol.as_torchrl_actor(composite=False)
    td = flat(TensorDict({"agent_features": h}, batch_size=[5]))
    assert td["action"].shape == (5, 9)
    assert torch.allclose(td["action_log_prob"], heads.policy(h, 0).log_prob(td["action"]))
    # the DreamTorchEnv layout: ("action", "move") [N] and ("action", "keys") [N, 8]
    td = pol.as_torchrl_actor()(TensorDict({"agent_features": h}, batch_size=[5]))
    assert td["action", "move"].shape == (5,) and td["action", "keys"].shape == (5, 8)
    joined = join_action(td["action"])
    assert torch.equal(joined[:, 0], td["action", "move"])
    assert torch.allclose(td["action_log_prob"], heads.policy(h, 0).log_prob(joined))
    with pytest.raises(ValueError, match="feature extractor"):
        pol(np.zeros((16, 16, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    return make_world_model(tmp_path_factory.mktemp("bc") / "run", heads=True, context=6)


def test_load_policy_phase2_and_phase3_runs(bc_run, tmp_path):
    heads = load_heads(bc_run)
    assert heads.value is None
    # a phase-3 run: heads (with value) in model.safetensors, world model through its parent
    run3, heads = make_phase3_run(bc_run, tmp_path / "pmpo", heads=heads, mtp_distance=1)
    assert world_model_dir(run3) == bc_run
    loaded = load_heads(run3)
    assert loaded.value is not None
    h = torch.randn(4, heads.config.dim)
    assert torch.equal(loaded.policy(h, 1).move_logits, heads.policy(h, 1).move_logits)
    pol = load_policy(run3, deterministic=True)
    assert pol.mtp_distance == 1
    frame = synthetic_frames(1, 1)[0, 0].numpy()
    a = pol(frame)
    assert a.shape == (9,) and a.dtype == np.int64


def test_frame_features_match_the_clip_path(bc_run, monkeypatch):
    """Feeding real frames one at a time puts a_{t-1} in slot t exactly like the sampler's context path."""
    from lol_dreamer.sampler import Sampler

    # no context noise, so both paths are deterministic and comparable
    monkeypatch.setattr(Sampler, "_renoise", lambda self, z, g: self.tau_ctx * z)
    pol = load_policy(bc_run, task=2, deterministic=True)
    wm = pol.features.wm
    dyn = pol.features.sampler.model
    with torch.no_grad():  # a latent scale far from the identity: both paths must normalise alike
        dyn.latent_mean.add_(0.3)
        dyn.latent_std.mul_(2.5)
    frames = synthetic_frames(1, 5, seed=4)
    actions = random_actions(1, 5, seed=4)
    feats = [pol.features.reset(frames[0, 0].numpy())]
    for t in range(1, 5):
        feats.append(pol.features.observe(actions[0, t - 1].numpy(), frames[0, t].numpy()))
    with torch.no_grad():
        z = wm.tokenizer.encode(frames.permute(0, 1, 4, 2, 3).float() / 255.0)
        for t in range(5):
            st = wm.sampler().start(z[:, : t + 1], actions[:, : t + 1], task=torch.tensor([2]))
            ref = st.agent.mean(1)[0]
            assert torch.allclose(feats[t], ref, atol=1e-4), t
    # different action history → different features (the action really enters)
    pol.features.reset(frames[0, 0].numpy())
    changed = actions[0, 0].clone()
    changed[0] = (changed[0] + 7) % 19
    other = pol.features.observe(changed.numpy(), frames[0, 1].numpy())
    assert not torch.allclose(other, feats[1])
    # acting from frames tracks the episode and returns valid actions
    pol.reset()
    acts = [pol(frames[0, t].numpy()) for t in range(3)]
    assert all(a.shape == (9,) for a in acts)


def test_act_in_envs_dream_features_and_real_frames(bc_run, tmp_path):
    import gymnasium as gym

    from lol_dreamer.envs.dream import DreamEnv

    pol = load_policy(bc_run, deterministic=True)
    dream = DreamEnv(checkpoint=str(bc_run), task="farm")
    dream.reset(seed=0)
    for _ in range(2):
        a = pol.act(dream)
        h = dream.agent_features
        assert np.array_equal(a, pol.heads.policy(h, 0).mode().numpy())
        dream.step(a)
    # the real game at the world model's resolution: acts from the rendered frame
    run32 = make_world_model(tmp_path / "wm32", res=32, heads=True, context=4)
    pol32 = load_policy(run32, deterministic=True)
    lane = gym.make("LoLLane-v0", res=32, max_steps=5)
    lane.reset(seed=0)
    pol32.reset()
    for _ in range(3):
        a = pol32.act(lane)
        assert a.shape == (9,) and lane.action_space.contains(a)
        lane.step(a)


def test_load_policy_reads_task_and_acting_distance_from_the_run(bc_run, tmp_path):
    import shutil

    from lol_dreamer.io import atomic_write_json, read_json

    run = tmp_path / "bc_push"
    shutil.copytree(bc_run, run)
    cfg = read_json(run / "config.json")
    cfg.update(task="push", task_id=2, act_distance=1)
    atomic_write_json(run / "config.json", cfg)
    pol = load_policy(run)
    assert pol.mtp_distance == 1 and pol.features.task == 2
    pol = load_policy(run, task="fight", mtp_distance=0)
    assert pol.mtp_distance == 0 and pol.features.task == 1
    with pytest.raises(ValueError, match="unknown task"):
        load_policy(run, task="jungle")
