"""Phase 3 in the real game while it trains: real/return rows, the prior at step 0, RNG isolation, plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from imagine_fixture import interrupt_imagine_at, make_agent_folder

from lol_dreamer.agents.imagine import (
    ImagineConfig,
    ImagineTrainer,
    build_imagination,
)
from lol_dreamer.agents.imagine_plot import curves, smooth
from lol_dreamer.agents.real_eval import RealEvalConfig, RealEvaluator, live_policy, real_return
from lol_dreamer.checkpoint import load_state_dict_file
from lol_dreamer.cli import main
from lol_dreamer.policy import load_policy
from lol_dreamer.training.config import TrainConfig

N, H, STEPS, EPISODES, MAX_STEPS = 3, 4, 4, 2, 60
REAL = ("real/return", "real/return_ci95", "real/episodes")


TASK, TOWARD_ENEMY = "fight", 2  # movement bin 2 (40°) walks into the fight


def make_walker(out):
    """A res-32 phase-2 folder (LaneSim renders at 32 px or more) whose policy mostly walks toward
    the enemy, so real returns are non-zero and differ between seeds."""
    from lol_dreamer.checkpoint import load_model, save_weights
    from lol_dreamer.io import read_json

    agent = make_agent_folder(out, res=32)
    model = load_model(agent)
    with torch.no_grad():
        model.heads.policy.out.bias[:, TOWARD_ENEMY] += 4.0
    save_weights(agent / "model.safetensors", model, read_json(agent / "config.json")["model"])
    return agent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagine_real")
    return root, make_walker(root / "bc"), None  # contexts: the agent's start clips


def _train_cfg(lr=1e-2, **kw):
    return TrainConfig(steps=STEPS, lr=lr, warmup=0, device="cpu", progress=False,
                       save_every=0, **kw)  # fmt: skip


def _real_cfg(every=2):
    return RealEvalConfig(every=every, episodes=EPISODES, max_steps=MAX_STEPS)


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _argv(agent, out, *extra):
    return ["train", "imagine", "--agent", str(agent), "--out", str(out), "--task", TASK,
            "--steps", str(STEPS), "--horizon", str(H), "--batch", str(N), "--lr", "1e-3",
            "--warmup", "0", "--save-every", "2",
            "--real-eval-every", "2", "--real-eval-episodes", str(EPISODES),
            "--real-eval-max-steps", str(MAX_STEPS), "--device", "cpu", "--quiet", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def full_run(setup):
    root, agent, _ = setup
    out = root / "pmpo"
    assert main(_argv(agent, out)) == 0
    return out


def test_real_return_rows_prior_at_step_0_published_weights_and_plot(setup, full_run):
    _, agent, _ = setup
    out = full_run
    rows = _rows(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert set(rows[0]) == {"step", *REAL}  # the prior's row carries nothing else
    for r in rows[1:]:
        assert "imagined_return" in r and "loss" in r
        assert (r["step"] % 2 == 0) == ("real/return" in r)  # every 2 steps and the last
    for r in (rows[0], rows[2], rows[4]):
        assert set(REAL) <= set(r) and r["real/episodes"] == EPISODES
        assert np.isfinite(r["real/return"]) and r["real/return_ci95"] >= 0.0

    # step 0 is the BC policy, evaluated separately with the same seeds: exactly equal
    bc = real_return(load_policy(agent, task=TASK), TASK, EPISODES, MAX_STEPS)
    assert {k: rows[0][k] for k in REAL} == bc and bc["real/return"] != 0.0
    assert bc["real/return_ci95"] > 0.0  # the two seeds' episodes differ
    # the last evaluation used the published weights, as a fresh load of the run sees them
    final = real_return(load_policy(out), TASK, EPISODES, MAX_STEPS)
    assert {k: rows[4][k] for k in REAL} == final
    assert final["real/return"] != bc["real/return"]  # …which are no longer the prior's
    assert json.loads((out / "config.json").read_text())["real_eval"] == {
        "every": 2, "episodes": EPISODES, "max_steps": MAX_STEPS, "deterministic": False,
        "seeds": [0, 1000],
    }  # fmt: skip

    png = out / "imagined_vs_real.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    c = curves(rows)
    assert c["imagined_step"].tolist() == [1, 2, 3, 4] and c["real_step"].tolist() == [0, 2, 4]
    assert c["real"][0] == bc["real/return"]


def test_resume_with_real_evaluation_reproduces_the_run(setup, full_run, monkeypatch):
    root, agent, _ = setup
    part = root / "pmpo_part"
    undo = interrupt_imagine_at(monkeypatch, 2)
    assert main(_argv(agent, part)) == 130  # interrupted after the step-2 checkpoint
    undo()
    assert main(_argv(agent, part, "--resume")) == 0
    full, resumed = _rows(full_run), _rows(part)
    assert [r["step"] for r in resumed] == [0, 1, 2, 3, 4]
    drop = "perf/steps_per_s"
    assert [{k: v for k, v in r.items() if k != drop} for r in resumed] == [
        {k: v for k, v in r.items() if k != drop} for r in full
    ]
    a = load_state_dict_file(full_run / "model.safetensors")
    b = load_state_dict_file(part / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _losses(agent, data, real: bool):
    """Train with an EMA of the weights → losses, raw heads, last real eval, RNG state and the real
    returns of the final raw and EMA weights."""
    im = build_imagination(agent, ImagineConfig(horizon=H, batch=N, task=TASK), data=data)
    kw = {}
    if real:
        kw = dict(
            real_eval=RealEvaluator(im.model.heads, im.world_model, im.task, 0, _real_cfg()),
            real_cfg=_real_cfg(),
        )
    cfg = _train_cfg(lr=2e-3, ema_decay=0.8)
    trainer = ImagineTrainer(im.model, im.objective, im.rollouts, cfg, None,
                             params=im.trainable_parameters, run_config={}, **kw)  # fmt: skip
    result = trainer.fit()
    im.rollouts.close()
    rng = torch.get_rng_state()
    state = {k: v.clone() for k, v in im.model.heads.state_dict().items()}

    def play():
        policy = live_policy(im.model.heads, im.world_model, TASK, 0)
        return real_return(policy, TASK, EPISODES, MAX_STEPS)

    raw = play()
    trainer.ema.copy_to(im.model)  # what the published (EMA) policy does in the real game
    return result.losses, state, trainer.last_eval, rng, (raw, play())


def test_real_evaluation_leaves_training_unchanged_and_sees_the_ema_weights(setup):
    _, agent, data = setup
    losses, state, ev, rng, _ = _losses(agent, data, real=False)
    losses_r, state_r, ev_r, rng_r, ema_r = _losses(agent, data, real=True)
    assert ev == {} and set(REAL) <= set(ev_r)  # it really evaluated (steps 0, 2 and 4)
    assert losses_r == losses  # bit for bit: no RNG draw or mode change leaks into training
    assert state_r.keys() == state.keys() and all(torch.equal(state_r[k], state[k]) for k in state)
    assert torch.equal(rng_r, rng)
    raw, ema = ema_r
    assert ev_r == ema != raw  # the last evaluation played the EMA weights, not the raw ones


def test_real_eval_schedule_and_smoothing():
    cfg = RealEvalConfig(every=3)
    assert [s for s in range(11) if cfg.due(s, 10)] == [0, 3, 6, 9, 10]
    assert not any(RealEvalConfig(every=0).due(s, 10) for s in range(11))
    with pytest.raises(ValueError, match="--real-eval-every 0"):
        RealEvalConfig(every=1, episodes=0)
    x = np.array([0.0, 2.0, 4.0])
    assert smooth(x, 0.0).tolist() == x.tolist()
    assert smooth(x, 0.5).tolist() == pytest.approx([0.0, 4 / 3, 20 / 7])
