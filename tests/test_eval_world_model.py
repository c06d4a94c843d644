"""World-model evaluation (SPEC §9): the measures on synthetic rollouts, then the command end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lol_dreamer.evaluation.rollout_metrics import (
    coherent_horizon,
    position_errors,
    psnr_per_frame,
    shuffle_actions,
    ssim_per_frame,
)
from lol_dreamer.evaluation.world_model_report import format_report, plot_report, rollout_report

SIZE = 32


def _detect(frame: np.ndarray):
    """Centre of the pure-red pixels, or None."""
    ys, xs = np.nonzero((frame[..., 0] == 255) & (frame[..., 1] == 0))
    if len(xs) == 0:
        return None
    return float(xs.mean()), float(ys.mean())


def _render(pos: np.ndarray) -> np.ndarray:
    """Frames ``[..., SIZE, SIZE, 3]`` with a 2×2 red champion at each ``pos [..., 2]`` (NaN = absent)."""
    out = np.full((*pos.shape[:-1], SIZE, SIZE, 3), 40, np.uint8)
    flat_o, flat_p = out.reshape(-1, SIZE, SIZE, 3), pos.reshape(-1, 2)
    for f, p in zip(flat_o, flat_p):
        if np.isnan(p).any():
            continue
        x, y = int(p[0]), int(p[1])
        f[y : y + 2, x : x + 2] = (255, 0, 0)
    return out


def _game(start: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Toy dynamics: action k ∈ {0..3} moves one pixel right/left/down/up; positions ``[r, h, 2]``."""
    step = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], float)
    return np.clip(start[:, None] + np.cumsum(step[actions], axis=1), 0, SIZE - 2)


def test_psnr_and_ssim_exact_values():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = a.copy()
    b[1] += 10
    p = psnr_per_frame(b, a)
    assert np.isinf(p[0])
    assert p[1] == pytest.approx(10 * np.log10(255**2 / 100))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    assert ssim_per_frame(x, x) == pytest.approx(1.0)
    assert ssim_per_frame(255 - x, x) < 0.0


def test_position_errors_and_coherent_horizon():
    nan = np.nan
    pred = np.array([[[0, 0], [3, 4], [nan, nan], [nan, nan]]], float)
    true = np.array([[[0, 0], [0, 0], [1, 1], [nan, nan]]], float)
    err = position_errors(pred, true)
    np.testing.assert_allclose(err, [[0, 5, np.inf, 0]])
    # first frame over 4 px is index 1: one coherent frame
    assert coherent_horizon(err, 4.0).tolist() == [1]
    # a lost champion counts as exceeded even with a huge threshold
    assert coherent_horizon(err, 1e9).tolist() == [2]
    # never exceeded: the whole rollout (censored)
    assert coherent_horizon(np.zeros((3, 7)), 1.0).tolist() == [7, 7, 7]
    # exceeded at the very first frame: zero
    assert coherent_horizon(np.full((1, 5), 9.0), 8.0).tolist() == [0]


def test_shuffle_actions_permutes_in_time():
    rng = np.random.default_rng(0)
    a = np.stack([np.arange(10)] * 9, -1)[None].repeat(3, 0)  # [3, 10, 9]
    s = shuffle_actions(a, rng)
    for i in range(3):
        assert sorted(s[i, :, 0].tolist()) == list(range(10))
        assert np.all(s[i, :, 0] != np.arange(10))  # a derangement


def _rollouts(r=6, h=32, seed=0):
    rng = np.random.default_rng(seed)
    start = rng.integers(8, 22, (r, 2)).astype(float)
    actions = rng.integers(0, 4, (r, h))
    true_pos = _game(start, actions)
    shuf = shuffle_actions(actions[..., None], rng)[..., 0]
    return start, actions, true_pos, shuf


def test_copying_model_is_coherent_throughout_and_shuffling_degrades():
    start, actions, true_pos, shuf = _rollouts()
    true = _render(true_pos)
    last = _render(start)
    # a "model" that follows the actions exactly (equals the truth), and the same model fed shuffled actions
    pred = _render(_game(start, actions))
    shuffled = _render(_game(start, shuf))
    rep = rollout_report(pred, true, last, shuffled, _detect, horizons=(1, 4, 16))
    h = true.shape[1]
    assert rep["coherent_horizon"]["model"]["mean"] == h
    assert rep["coherent_horizon"]["model"]["censored_fraction"] == 1.0
    assert rep["position_error_px"]["model"]["16"] == 0.0
    assert rep["psnr"]["model"]["16"] == 100.0  # exact copies are capped at 100 dB
    assert rep["ssim"]["model"]["1"] == pytest.approx(1.0)
    # shuffled actions: the trajectory drifts away from the truth (before the last step, where
    # a permutation of the same moves lands on the same cell again)
    assert rep["position_error_px"]["shuffled"]["16"] > 0
    assert rep["coherent_horizon"]["shuffled"]["mean"] < h
    ends = rep["coherent_horizon"]["end_cause"]
    assert ends["model"] == ["censored"] * len(start)
    # shuffled actions misplace the champion but never hide it
    assert "drift" in ends["shuffled"] and "lost" not in ends["shuffled"]
    assert rep["action_following"]["psnr_drop_db"]["16"] > 0
    assert rep["action_following"]["position_error_increase_px"]["16"] > 0
    # the copy-last-frame floor is worse than the perfect model
    assert rep["psnr"]["copy_last"]["16"] < rep["psnr"]["model"]["16"]
    assert rep["reward"] is None


def test_model_that_ignores_actions_shows_no_action_following():
    start, _actions, true_pos, _shuf = _rollouts(seed=1)
    true = _render(true_pos)
    frozen = _render(np.repeat(start[:, None], true.shape[1], 1))  # ignores actions entirely
    rep = rollout_report(frozen, true, frozen[:, 0], frozen, _detect, horizons=(1, 4, 16))
    assert rep["action_following"]["psnr_drop_db"]["16"] == 0.0
    assert rep["action_following"]["position_error_increase_px"]["16"] == 0.0


def test_lost_champion_ends_coherence_and_rewards_are_scored(tmp_path):
    start, _actions, true_pos, _ = _rollouts(r=2, h=8)
    pred_pos = true_pos.copy()
    pred_pos[0, 3:] = np.nan  # the dream loses the champion at frame 3
    rep = rollout_report(
        _render(pred_pos),
        _render(true_pos),
        _render(start),
        _render(true_pos),
        _detect,
        horizons=(1, 4),
        pred_rewards=np.full((2, 8), 0.5),
        true_rewards=np.ones((2, 8)),
    )
    assert rep["coherent_horizon"]["per_rollout"] == [3, 8]
    assert rep["coherent_horizon"]["per_rollout_by_run"]["model"] == [3, 8]
    assert rep["coherent_horizon"]["end_cause"]["model"] == ["lost", "censored"]
    assert rep["champion_lost_rate"]["model"]["4"] == 0.5
    assert rep["reward"]["mae"]["4"] == pytest.approx(0.5)
    text = format_report(rep)
    assert "coherent horizon" in text and "reward MAE" in text
    assert "rollouts ending before the last frame: model 1 lost / 0 drifted" in text
    png = plot_report(rep, tmp_path / "wm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_world_model_command_writes_every_measure(tmp_path, capsys):
    from wm_train_fixture import make_trained_world_model

    from lol_dreamer.cli import main

    _tok, data, wm = make_trained_world_model(tmp_path, n_starts=2, batch_size=2)
    bc = tmp_path / "bc"
    common = ["--steps", "1", "--batch-size", "2", "--eval-batches", "1", "--quiet"]
    assert main(["train", "agent", "--world-model", str(wm), "--data", str(data), "--out", str(bc),
                 "--heads-preset", "test", "--mtp", "2", *common]) == 0  # fmt: skip
    out = tmp_path / "report.json"
    argv = ["eval", "world-model", "--world-model", str(bc), "--data", str(data), "--contexts", "2"]
    assert main([*argv, "--horizons", "1,4,8", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["horizons"] == [1, 4, 8] and rep["rollout_frames"] == 8
    assert rep["n_rollouts"] == 2  # one held-out episode, two fixed contexts
    for key in ("psnr", "ssim", "position_error_px", "champion_lost_rate"):
        assert set(rep[key]) == {"model", "copy_last", "shuffled", "tokenizer"}
        assert set(rep[key]["model"]) == {"1", "4", "8"}
    assert rep["champion_visible_rate"] == 1.0 and rep["threshold_px"] == 1.0
    assert {"mean", "median", "censored_fraction"} <= set(rep["coherent_horizon"]["model"])
    assert len(rep["coherent_horizon"]["per_rollout"]) == 2
    assert len(rep["setup"]["windows"]) == 2  # [episode name, first context frame] per rollout
    assert all(isinstance(n, str) and s >= 0 for n, s in rep["setup"]["windows"])
    assert set(rep["action_following"]) == {
        "psnr_drop_db",
        "position_error_increase_px",
        "coherent_horizon_drop",
    }
    assert set(rep["reward"]["mae"]) == {"1", "4", "8"} and rep["reward"]["mae_all"] >= 0
    assert rep["setup"]["context_frames"] == 8 and rep["setup"]["dream_fps"] > 0
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    shown = capsys.readouterr()
    assert "coherent horizon" in shown.out
    assert "dreaming" in shown.err and "32/32" in shown.err  # 2 rollouts × 8 frames × 2 action sets
