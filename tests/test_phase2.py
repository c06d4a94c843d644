"""Phase 2: agent tokens leave the dynamics untouched, heads learn, BC sees only the relevant rows."""

from __future__ import annotations

import json

import pytest
import torch
from wm_train_fixture import make_trained_world_model

from lol_dreamer.actions import ACTION_NVEC, TASK_INDEX
from lol_dreamer.cli import main
from lol_dreamer.models.agent_model import AgentWorldModel, load_dynamics_into, with_agent_tokens
from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel
from lol_dreamer.models.heads import HeadsConfig
from lol_dreamer.objectives.phase2 import Phase2Config, Phase2Objective, select_rows
from lol_dreamer.objectives.shortcut import ShortcutConfig

N_Z, D_Z = 8, 8


def _models():
    base_cfg = DynamicsConfig.preset("test", n_z=N_Z, d_z=D_Z)
    base = DynamicsModel(base_cfg).eval()
    cfg = with_agent_tokens(base_cfg, 2)
    agent = AgentWorldModel(cfg, HeadsConfig.preset("test", dim=cfg.dim)).eval()
    new = load_dynamics_into(agent, base.state_dict())
    return base, agent, new


def _batch(b=4, t=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    actions = torch.cat([torch.randint(0, k, (b, t, 1), generator=g) for k in ACTION_NVEC], -1)
    rewards = torch.zeros(b, t, 3)
    rewards[:, ::3, TASK_INDEX["farm"]] = 1.0
    terminated = torch.zeros(b, t, dtype=torch.bool)
    terminated[:, -1] = True
    return {
        "latents": torch.rand(b, t, N_Z, D_Z, generator=g) * 2 - 1,
        "actions": actions,
        "labeled": torch.ones(b, t, dtype=torch.bool),
        "rewards": rewards,
        "terminated": terminated,
        "task": torch.zeros(b, dtype=torch.long),
        "relevant": torch.arange(b) < b // 2,
    }


def _objective():
    return Phase2Objective(Phase2Config(task=TASK_INDEX["farm"], shortcut=ShortcutConfig(k_max=64)))


def test_agent_tokens_change_nothing_in_the_dynamics_output():
    base, agent, new = _models()
    assert sorted(new) == ["agent_tokens", "task_emb.weight"]
    b, t = 3, 6
    z = torch.randn(b, t, N_Z, D_Z)
    tau = torch.randint(0, 65, (b, t))
    step = torch.randint(0, 7, (b, t))
    acts = _batch(b, t)["actions"]
    lab = torch.rand(b, t) < 0.7
    with torch.no_grad():
        ref = base(z, tau, step, acts, lab).z1
        for task in (torch.tensor([0, 1, 2]), torch.tensor([2, 2, 2])):
            out = agent(z, tau, step, acts, lab, task=task)
            torch.testing.assert_close(out.z1, ref, rtol=1e-5, atol=1e-5)
            assert out.agent.shape == (b, t, 2, agent.dynamics.cfg.dim)
        agent.dynamics.agent_tokens.add_(torch.randn_like(agent.dynamics.agent_tokens))
        torch.testing.assert_close(
            agent(z, tau, step, acts, lab, task=task).z1, ref, rtol=1e-5, atol=1e-5
        )
        # the agent tokens do read the frames and the task
        h1 = agent(z, tau, step, acts, lab, task=torch.tensor([0, 0, 0])).agent
        h2 = agent(z, tau, step, acts, lab, task=torch.tensor([1, 1, 1])).agent
        assert not torch.allclose(h1, h2)


def _terms(model, batch, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        out = _objective()(model, batch, step=1)
    return {k: float(v) for k, v in out.terms.items()}


def test_behaviour_cloning_uses_only_the_relevant_rows_and_video_only_the_uniform_rows():
    _, agent, _ = _models()
    agent.train()
    with torch.no_grad():  # the output layers start at zero (uniform policy); make them informative
        for p in agent.heads.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    batch = _batch()
    ref = _terms(agent, batch)
    assert set(ref) == {"flow", "bootstrap", "video", "bc", "reward", "continue"}
    uni, rel = ~batch["relevant"], batch["relevant"]

    # changing the uniform rows' actions, rewards and terminal flags leaves every head term alone
    other = {k: v.clone() for k, v in batch.items()}
    other["actions"][uni] = _batch(seed=5)["actions"][uni]
    other["rewards"][uni] = 7.0
    other["terminated"][uni] = False
    got = _terms(agent, other)
    for k in ("bc", "reward", "continue"):
        assert got[k] == pytest.approx(ref[k], rel=1e-6)

    # changing the relevant rows' actions changes BC; their latents do not touch the video terms
    other = {k: v.clone() for k, v in batch.items()}
    other["actions"][rel] = _batch(seed=6)["actions"][rel]
    assert _terms(agent, other)["bc"] != pytest.approx(ref["bc"], rel=1e-6)
    other = {k: v.clone() for k, v in batch.items()}
    other["latents"][rel] = torch.randn_like(other["latents"][rel])
    got = _terms(agent, other)
    for k in ("flow", "bootstrap", "video"):
        assert got[k] == pytest.approx(ref[k], rel=1e-6)

    # unlabeled steps are not cloned: masking every relevant label zeroes BC
    other = {k: v.clone() for k, v in batch.items()}
    other["labeled"][rel] = False
    assert _terms(agent, other)["bc"] == 0.0
    assert select_rows(batch, rel)["latents"].shape[0] == int(rel.sum())


def test_reward_and_continue_targets_are_the_transition_into_each_frame():
    """Phase 2 trains reward / continue at slot t, distance n on rewards[t+n−1] / not terminated[t+n−1];
    the slot-0 distance-0 target (no transition leads into a window's first frame) is masked."""
    _, agent, _ = _models()
    agent.train()
    with torch.no_grad():
        for p in agent.heads.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    batch = _batch(b=4, t=6)
    g = torch.Generator().manual_seed(3)
    farm = TASK_INDEX["farm"]
    batch["rewards"][..., farm] = torch.randn(4, 6, generator=g) * 3
    batch["terminated"] = torch.rand(4, 6, generator=g) < 0.4
    seen = {}

    def keep(name):
        def hook(_module, _inputs, out):
            out.retain_grad()
            seen[name] = out

        return hook

    hooks = [agent.heads.reward.out.register_forward_hook(keep("reward")),
             agent.heads.cont.out.register_forward_hook(keep("cont"))]  # fmt: skip
    torch.manual_seed(0)
    out = _objective()(agent, batch, step=1)
    out.loss.backward()
    for hk in hooks:
        hk.remove()
    rel = batch["relevant"]
    r = batch["rewards"][rel][..., farm]  # [b, T] stored alignment
    live = (~batch["terminated"][rel]).float()
    r_logits, c_logits = (
        seen["reward"].detach(),
        seen["cont"][..., 0].detach(),
    )  # [b,T,l,k], [b,T,l]
    T, n_dist = r.shape[1], r_logits.shape[2]
    want_r = want_c = 0.0
    for n in range(n_dist):
        slots = [t for t in range(T) if 0 <= t + n - 1 < T]
        idx = torch.tensor(slots)
        want_r += float(agent.heads.reward.loss(r_logits[:, idx, n], r[:, idx + n - 1]).mean())
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            c_logits[:, idx, n], live[:, idx + n - 1]
        )
        want_c += float(bce)
    assert float(out.terms["reward"]) == pytest.approx(want_r, rel=1e-5)
    assert float(out.terms["continue"]) == pytest.approx(want_c, rel=1e-5)
    for name in ("reward", "cont"):
        grad = seen[name].grad.abs().flatten(3).sum(-1)  # [b, T, l]
        assert (grad[:, 0, 0] == 0).all(), name  # masked: slot 0, distance 0
        assert (grad[:, 1:, 0] > 0).all(), name
        assert (grad[:, T - 1, 1] > 0).all(), name  # the window's last transition, one ahead


def test_heads_learn_on_a_tiny_run():
    torch.manual_seed(0)
    _, agent, _ = _models()
    agent.train()
    obj = _objective()
    batch = _batch(b=4, t=8)
    opt = torch.optim.Adam(agent.parameters(), lr=3e-3)
    history = []
    for step in range(31):
        out = obj(agent, batch, step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append({k: float(out.terms[k]) for k in ("bc", "reward", "continue")})
    first, last = history[0], history[-1]
    assert last["reward"] < 0.5 * first["reward"]
    assert last["continue"] < 0.7 * first["continue"]
    assert last["bc"] < 0.95 * first["bc"]  # random actions: only memorisation helps, slowly


@pytest.fixture(scope="module")
def world_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("p2")
    _tok, data, wm = make_trained_world_model(root)
    return root, data, wm


def test_train_agent_writes_a_complete_agent_world_model(world_model):
    from safetensors.torch import load_file

    from lol_dreamer.world_model import load_world_model

    root, data, wm = world_model
    out = root / "bc"
    argv = [
        "train",
        "agent",
        "--world-model",
        str(wm),
        "--data",
        str(data),
        "--out",
        str(out),
        "--task",
        "farm",
    ]
    argv += [
        "--mtp",
        "2",
        "--heads-preset",
        "test",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--eval-batches",
        "1",
        "--quiet",
    ]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "agent" and cfg["parent"] == str(wm.resolve())
    assert cfg["task"] == "farm" and cfg["mtp"] == 2 and cfg["act_distance"] == 0
    assert cfg["model"]["heads"]["mtp"] == 2 and cfg["model"]["dynamics"]["n_agent"] == 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for k in ("loss", "loss/flow", "loss/bootstrap", "loss/bc", "loss/reward", "loss/continue"):
        assert k in rows[0]
    # the start clips, clips and tokenizer are the parent's
    for f in ("starts.safetensors", "clips.safetensors", "tokenizer/model.safetensors"):
        assert (out / f).read_bytes() == (wm / f).read_bytes()
    # resume continues the same run
    argv = [a if a != "3" else "4" for a in argv]
    assert main([*argv, "--resume"]) == 0
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
    ]
    loaded = load_world_model(out)
    assert loaded.has_heads and loaded.dynamics.cfg.n_agent == 1
    # the transformer started from the parent's weights (one shared step size later, still close)
    parent = load_file(str(wm / "model.safetensors"))
    mine = load_file(str(out / "model.safetensors"))
    k = "z_in.weight"
    assert (mine[f"dynamics.{k}"] - parent[k]).abs().max() < 0.05


def test_frozen_trunk_keeps_the_dream_exactly_and_still_trains_the_heads(world_model):
    from safetensors.torch import load_file

    root, data, wm = world_model
    out = root / "bc_frozen"
    argv = ["train", "agent", "--world-model", str(wm), "--data", str(data), "--out", str(out),
            "--mtp", "2", "--heads-preset", "test", "--steps", "3", "--batch-size", "2",
            "--eval-batches", "1", "--quiet", "--trunk-lr-scale", "0"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["trunk_lr_scale"] == 0.0
    parent = load_file(str(wm / "model.safetensors"))
    mine = load_file(str(out / "model.safetensors"))
    for k, v in parent.items():  # every pre-trained transformer weight is bit-identical
        assert torch.equal(mine[f"dynamics.{k}"], v), k
    from lol_dreamer.train_agent import heads_config

    base = DynamicsConfig.from_dict(json.loads((wm / "config.json").read_text())["model"])
    torch.manual_seed(0)  # the run's --seed: the same initial agent tokens and heads
    start = AgentWorldModel(
        with_agent_tokens(base, 1), heads_config("test", base.dim, 2)
    ).state_dict()
    new = [k for k in mine if k not in {f"dynamics.{p}" for p in parent}]
    assert new and all(mine[k].shape == start[k].shape for k in new)
    moved = [k for k in new if not torch.equal(mine[k], start[k])]
    assert moved  # the heads and agent tokens did train


def test_trunk_lr_scale_groups():
    from lol_dreamer.train_agent import trainable_groups

    _, agent, new = _models()
    groups = trainable_groups(agent, new, 0.1)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1]
    names = {id(p): n for n, p in agent.named_parameters()}
    fresh = {names[id(p)] for p in groups[0]["params"]}
    assert {f"dynamics.{k}" for k in new} <= fresh
    assert all(not n.startswith("dynamics.") or n[len("dynamics.") :] in new for n in fresh)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(agent.parameters()))
    assert len(trainable_groups(agent, new, 0.0)) == 1
    with pytest.raises(ValueError, match="trunk-lr-scale"):
        trainable_groups(agent, new, -1.0)
