"""Phase 3: frozen transformer and prior, heads that learn, TorchRL rollouts, run folder and resume."""

from __future__ import annotations

import json

import pytest
import torch
from imagine_fixture import interrupt_imagine_at, make_agent_dataset, make_agent_folder
from torchrl.envs.utils import check_env_specs

from lol_dreamer.agents.imagine import (
    ImagineConfig,
    ImagineTrainer,
    build_imagination,
)
from lol_dreamer.checkpoint import load_state_dict_file
from lol_dreamer.cli import main
from lol_dreamer.training.config import TrainConfig

N, H = 3, 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagine")
    agent = make_agent_folder(root / "bc")
    data = make_agent_dataset(root / "data", agent)
    return root, agent, data


def _build(agent, data, **kw):
    return build_imagination(agent, ImagineConfig(horizon=H, batch=N, **kw), data=data)


def _train(im, steps, run_dir=None):
    cfg = TrainConfig(steps=steps, lr=1e-2, warmup=0, device="cpu", progress=False, save_every=0)
    trainer = ImagineTrainer(im.model, im.objective, im.rollouts, cfg, run_dir,
                             params=im.trainable_parameters, run_config={"kind": "imagine", "model": {}})  # fmt: skip
    return trainer, trainer.fit()


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_phase3_updates_only_policy_and_value(setup):
    _, agent, data = setup
    im = _build(agent, data)
    heads = im.model.heads
    frozen = {
        "dynamics": (im.model.dynamics, _snapshot(im.model.dynamics)),
        "reward": (heads.reward, _snapshot(heads.reward)),
        "continue": (heads.cont, _snapshot(heads.cont)),
        "prior": (im.loss.prior, _snapshot(im.loss.prior)),
    }
    policy, value = _snapshot(heads.policy), _snapshot(heads.value)
    assert not heads.value.out.weight.any()  # new value head: zero output layer
    trainer, _ = _train(im, 2)
    im.rollouts.close()
    for name, (module, before) in frozen.items():
        assert _same(before, _snapshot(module)), f"{name} changed"
        assert not any(p.requires_grad for p in module.parameters()), name
    assert not im.model.dynamics.training  # eval mode while training
    assert not _same(policy, _snapshot(heads.policy))
    assert not _same(value, _snapshot(heads.value))
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in [*heads.policy.parameters(), *heads.value.parameters()]}


def test_kl_to_the_prior_is_zero_at_start_and_positive_after_an_update(setup):
    _, agent, data = setup
    im = _build(agent, data)
    batch = im.rollouts.sample(0)
    assert float(im.loss(batch)["kl"]) == 0.0  # the prior is an exact copy of the initial policy
    _train(im, 2)
    after = im.loss(im.rollouts.sample(0))
    im.rollouts.close()
    kl, loss_kl = float(after["kl"].detach()), float(after["loss_kl"].detach())
    assert kl > 1e-6 and loss_kl == pytest.approx(0.3 * kl)


@pytest.mark.parametrize("distance", [0, 2])
def test_prior_is_the_trained_phase2_head_at_the_acting_distance(setup, distance):
    root, _, data = setup
    agent = make_agent_folder(root / f"bc_n{distance}", act_distance=distance)
    im = _build(agent, data)
    im.rollouts.close()
    assert im.loss.mtp_distance == distance and im.actor.mtp_distance == distance
    bc = load_state_dict_file(agent / "model.safetensors")
    w, b = bc["heads.policy.out.weight"][distance], bc["heads.policy.out.bias"][distance]
    assert w.abs().sum() > 0  # a trained (non-zero) phase-2 head
    assert torch.equal(im.loss.prior.out.weight[distance], w)
    assert torch.equal(im.loss.prior.out.bias[distance], b)
    prior_state = {
        k[len("heads.policy.") :]: v for k, v in bc.items() if k.startswith("heads.policy.")
    }
    assert _same(prior_state, im.loss.prior.state_dict())
    # the actor samples from the policy head at that same distance
    h = torch.randn(5, im.model.heads.config.dim)
    d_actor = im.actor.policy.dist(h)
    d_prior = im.loss.prior(h, distance)
    assert torch.equal(d_actor.move_logits, d_prior.move_logits)


def test_collector_rollouts_start_from_dataset_contexts_and_match_the_direct_loop(setup):
    _, agent, data = setup
    im = _build(agent, data)
    check_env_specs(im.env, seed=0)
    a0, a1 = im.rollouts.sample(0), im.rollouts.sample(1)
    again = im.rollouts.sample(0)
    direct = im.rollouts.direct(1)
    im.rollouts.close()
    assert a0.batch_size == (N, H)
    for step, td in ((0, a0), (1, a1)):
        ctx = im.env.contexts(step)
        assert torch.equal(td["latent"][:, 0], ctx.latents[:, -1])  # one rollout per context
    assert not torch.equal(a0["latent"][:, 0], a1["latent"][:, 0])  # fresh contexts every step
    assert torch.equal(a0["agent_features"], again["agent_features"])  # a function of the step
    assert torch.equal(a0["action", "move"], again["action", "move"])
    # TorchRL collector == driving the dream batch by hand, bit for bit
    assert torch.equal(a1["agent_features"], direct["agent_features"])
    assert torch.equal(a1["next", "agent_features"], direct["next_agent_features"])
    assert torch.equal(a1["next", "reward"][..., 0], direct["reward"])
    assert torch.equal(a1["next", "continue"][..., 0], direct["continue"])
    assert torch.equal(
        torch.cat((a1["action", "move"][..., None], a1["action", "keys"]), -1), direct["action"]
    )
    # imagination never terminates early; the continue head discounts instead
    assert not a1["next", "done"].any()
    c = a1["next", "continue"]
    assert ((c > 0) & (c < 1)).all()
    torch.testing.assert_close(
        c[..., 0], im.world_model.continue_prob(a1["next", "agent_features"])
    )
    # r_{t+1} and c_{t+1} come from the frame the action produced, s_{t+1} (SPEC §7)
    torch.testing.assert_close(
        a1["next", "reward"][..., 0], im.world_model.reward(a1["next", "agent_features"])
    )
    # consecutive steps chain: s_{t+1} of step t is the state step t + 1 acts in
    assert torch.equal(a1["next", "agent_features"][:, :-1], a1["agent_features"][:, 1:])


def test_without_data_the_start_clips_are_the_contexts(setup):
    _, agent, _ = setup
    im = _build(agent, None)
    td = im.rollouts.sample(0)
    im.rollouts.close()
    starts = im.world_model.starts.latents.float()
    first = td["latent"][:, 0]
    assert all(any(torch.equal(f, s) for s in starts[:, -1]) for f in first)


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _argv(agent, data, out, *extra):
    return ["train", "imagine", "--agent", str(agent), "--data", str(data), "--out", str(out),
            "--steps", "4", "--horizon", str(H), "--batch", str(N), "--save-every", "2",
            "--lr", "1e-2", "--device", "cpu", "--quiet", *extra]  # fmt: skip


def test_cli_writes_a_loadable_run_folder_and_resume_reproduces(setup, monkeypatch):
    from lol_dreamer.policy import load_policy
    from lol_dreamer.world_model import load_world_model

    root, agent, data = setup
    full, part = root / "pmpo_full", root / "pmpo_part"
    assert main(_argv(agent, data, full)) == 0
    cfg = json.loads((full / "config.json").read_text())
    assert cfg["kind"] == "imagine" and cfg["parent"] == str(agent.resolve())
    assert cfg["model"]["heads"]["value"] is True and cfg["imagine"]["horizon"] == H
    rows = _rows(full)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert {"loss", "loss_policy", "loss_kl", "loss_value", "imagined_return"} <= set(r)
        assert r["loss"] == pytest.approx(
            r["loss_policy"] + r["loss_kl"] + r["loss_value"], rel=1e-5
        )
    assert rows[0]["loss_kl"] == 0.0 and rows[-1]["loss_kl"] > 0.0
    assert (full / "state").is_dir()
    # the phase-3 folder is itself an agent world model; its transformer is the phase-2 one
    wm = load_world_model(full)
    assert wm.has_heads and wm.heads.value is not None
    mine, parent = (
        load_state_dict_file(full / "model.safetensors"),
        load_state_dict_file(agent / "model.safetensors"),
    )
    assert all(torch.equal(mine[k], parent[k]) for k in parent if not k.startswith("heads.policy."))
    assert not torch.equal(mine["heads.policy.out.weight"], parent["heads.policy.out.weight"])
    policy = load_policy(full, world_model=False)
    assert policy(torch.randn(2, policy.dim)).shape == (2, 9)

    undo = interrupt_imagine_at(monkeypatch, 2)
    assert main(_argv(agent, data, part)) == 130  # interrupted after the step-2 checkpoint
    undo()
    assert main(_argv(agent, data, part)) == 1  # an existing run needs --resume
    assert main(_argv(agent, data, part, "--resume")) == 0
    assert _rows(part) == [
        {**r, "perf/steps_per_s": p["perf/steps_per_s"]} for r, p in zip(rows, _rows(part))
    ]
    a, b = (
        load_state_dict_file(full / "model.safetensors"),
        load_state_dict_file(part / "model.safetensors"),
    )
    assert _same(a, b)


def test_collected_rollouts_fit_torchrl_td_lambda_with_the_value_module(setup):
    from torchrl.objectives.value import TDLambdaEstimator

    from lol_dreamer.agents.actor import value_module
    from lol_dreamer.agents.returns import td_lambda_returns

    _, agent, data = setup
    im = _build(agent, data)
    td = im.rollouts.sample(0)
    im.rollouts.close()
    value = im.model.heads.value
    with torch.no_grad():
        value.out.weight.normal_(0.0, 0.5)  # a non-trivial value function
    g = torch.Generator().manual_seed(0)
    term = torch.rand(N, H, 1, generator=g) < 0.3
    td.set(("next", "terminated"), term)
    td.set(("next", "done"), term.clone())
    vm = value_module(value)
    est = TDLambdaEstimator(gamma=0.997, lmbda=0.95, value_network=vm)
    with torch.no_grad():
        est(td)
        h = torch.cat((td["agent_features"], td["next", "agent_features"][:, -1:]), 1)
        values = value.predict(h)
        ref = td_lambda_returns(td["next", "reward"][..., 0], 1.0 - term[..., 0].float(), values)
    torch.testing.assert_close(td["state_value"][..., 0], values[:, :-1])
    # TorchRL resets the recursion at every done step; with c = 0 there, eq. 10 does the same
    torch.testing.assert_close(td["value_target"][..., 0], ref, rtol=1e-5, atol=1e-5)


def test_value_head_learns_the_imagined_returns(setup):
    root, _, data = setup
    agent = make_agent_folder(root / "bc_reward", reward_scale=0.3)
    im = build_imagination(agent, ImagineConfig(horizon=H, batch=8), data=data)
    run = root / "value_run"
    cfg = TrainConfig(steps=30, lr=3e-2, warmup=0, device="cpu", progress=False, save_every=0)
    ImagineTrainer(im.model, im.objective, im.rollouts, cfg, run, params=im.trainable_parameters,
                   run_config={"kind": "imagine", "model": {}}).fit()  # fmt: skip
    im.rollouts.close()
    v = [r["loss_value"] for r in _rows(run)]
    assert sum(v[-5:]) < 0.75 * sum(v[:5])


def test_only_phase2_folders_are_accepted(setup, tmp_path):
    import shutil

    from worldmodel_fixture import make_world_model

    _, agent, _ = setup
    dyn = make_world_model(tmp_path / "dyn")
    with pytest.raises(ValueError, match="train agent"):
        build_imagination(dyn, ImagineConfig())
    phase3 = shutil.copytree(agent, tmp_path / "phase3")
    cfg = json.loads((phase3 / "config.json").read_text())
    (phase3 / "config.json").write_text(json.dumps({**cfg, "kind": "imagine"}))
    with pytest.raises(ValueError, match="--resume"):
        build_imagination(phase3, ImagineConfig())
