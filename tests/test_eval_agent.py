"""Real-game agent evaluation: t intervals, seeded episodes, and the `eval agent` command end to end."""

import json
import math

import gymnasium as gym
import numpy as np
import pytest
from worldmodel_fixture import make_phase3_run, make_world_model

import lol_dreamer  # noqa: F401
from lol_dreamer.agents.evaluate import (
    SEED_STRIDE,
    RandomRunner,
    ScriptedRunner,
    mean_ci,
    run_episode,
    student_t_quantile,
)
from lol_dreamer.cli import main


@pytest.mark.parametrize(
    ("df", "q"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452), (200, 1.9719)]
)
def test_student_t_quantile_matches_tables(df, q):
    assert abs(student_t_quantile(0.975, df) - q) < 1e-3
    assert abs(student_t_quantile(0.025, df) + q) < 1e-3


def test_mean_ci_by_hand():
    m = np.array([1.0, 2.0, 4.0])
    mean, half = mean_ci(m)
    assert mean == pytest.approx(7 / 3)
    assert half == pytest.approx(4.3027 * np.std(m, ddof=1) / math.sqrt(3), rel=1e-4)
    assert mean_ci(np.array([5.0])) == (5.0, None)


def test_eval_agent_baselines_end_to_end(tmp_path):
    out = tmp_path / "eval.json"
    video = tmp_path / "scripted.gif"
    argv = [
        "eval",
        "agent",
        "--task",
        "farm",
        "--seeds",
        "3",
        "--episodes",
        "1",
        "--max-steps",
        "150",
        "--res",
        "64",
        "--out",
        str(out),
        "--video",
        str(video),
        "--quiet",
    ]
    assert main(argv) == 0
    rep = json.loads(out.read_text())
    assert set(rep["results"]) == {"random", "scripted"}
    for r in rep["results"].values():
        per_seed = np.mean(r["returns"], axis=1)
        assert np.allclose(per_seed, r["per_seed"])
        assert r["mean"] == pytest.approx(per_seed.mean())
        lo, hi = r["ci95"]
        assert lo <= r["mean"] <= hi
        assert hi - lo == pytest.approx(2 * r["half_width"])
    # the scripted player earns more gold than random play on the same starts
    assert rep["results"]["scripted"]["mean"] > rep["results"]["random"]["mean"]
    assert video.exists() and video.stat().st_size > 0
    # episode 0 of seed 1 is reproducible outside the command
    env = gym.make("LoLLane-v0", task="farm", max_steps=150, res=64)
    ep = run_episode(ScriptedRunner("farm"), env, SEED_STRIDE * 1)
    assert ep.ret == pytest.approx(rep["results"]["scripted"]["returns"][1][0])
    ep = run_episode(RandomRunner(), env, SEED_STRIDE * 2)
    assert ep.ret == pytest.approx(rep["results"]["random"]["returns"][2][0])
    assert main(argv) == 0
    assert json.loads(out.read_text())["results"] == rep["results"]  # deterministic


def test_eval_agent_pmpo_run_with_bc_parent(tmp_path):
    bc = make_world_model(tmp_path / "bc", res=32, heads=True, context=4)
    pmpo, _heads = make_phase3_run(bc, tmp_path / "pmpo")
    argv = [
        "eval",
        "agent",
        "--agent",
        str(pmpo),
        "--seeds",
        "2",
        "--episodes",
        "1",
        "--max-steps",
        "12",
        "--quiet",
    ]
    assert main(argv) == 0
    rep = json.loads((pmpo / "eval_agent_farm.json").read_text())
    assert list(rep["results"]) == ["random", "scripted", "pmpo (pmpo)", "bc parent (bc)"]
    assert rep["res"] == 32
    assert all(
        np.array(r["lengths"]).max() == 12 or any(map(any, r["terminated"]))
        for r in rep["results"].values()
    )
    assert (pmpo / "eval_agent_farm.mp4").stat().st_size > 0
