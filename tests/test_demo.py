"""``lol-dreamer demo`` on the quick pipeline's agent world model: files, frame counts, the FPS line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from pipeline_fixture import quick_run

from lol_dreamer.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return quick_run(tmp_path_factory)


def test_demo_writes_side_by_side_video_plot_and_prints_fps(run, tmp_path, capsys):
    from lol_dreamer.videoio import read_video

    frames = 12
    assert main(["demo", "--world-model", str(run.out / "pmpo"), "--out", str(tmp_path / "d"),
                 "--frames", str(frames), "--seed", "3", "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    fps = re.search(r"^dream FPS: ([0-9.]+) frames/s", out, re.M)
    assert fps and float(fps.group(1)) > 0
    video = read_video(tmp_path / "d" / "demo.mp4")
    res, scale = 32, 256 // 32
    assert video.shape[0] == frames
    assert video.shape[1:] == (res * scale, (2 * res + 2) * scale, 3)  # dream | gap | LaneSim
    png = (tmp_path / "d" / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rep = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert rep["frames"] == frames and len(rep["psnr_db"]) == frames
    assert rep["actor"] == "agent" and rep["task"] == "farm"
    assert len(rep["position_error_px"]) == frames


def test_lanesim_side_replays_and_the_dream_is_reproducible(run, tmp_path):
    """The right half is LaneSim stepped with exactly the actions taken; same seed → same dream."""
    from lol_dreamer.envs.demo import play_context, run_demo
    from lol_dreamer.envs.lane.env import LaneEnv
    from lol_dreamer.envs.lane.scripted import ScriptedPlayer

    wm_dir = str(run.out / "pmpo")
    r1 = run_demo(wm_dir, tmp_path / "a", frames=5, seed=5, progress=False)
    r2 = run_demo(wm_dir, tmp_path / "b", frames=5, seed=5, progress=False)
    np.testing.assert_array_equal(r1.dream, r2.dream)
    np.testing.assert_array_equal(r1.actions, r2.actions)
    assert r1.actions.shape == (5, 9)

    c = json.loads((tmp_path / "a" / "demo.json").read_text())["context_frames"]
    lane = LaneEnv(task="farm", res=r1.real.shape[1], max_steps=c + 10, render_mode="rgb_array")
    play_context(lane, ScriptedPlayer("farm", seed=5), c, 5)
    replay = np.stack([lane.step(a)[0] for a in r1.actions])
    np.testing.assert_array_equal(replay, r1.real)


def test_psnr_and_position_error_helpers():
    from lol_dreamer.envs.demo import frame_psnr, position_error

    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert frame_psnr(a, a) == 100.0
    assert frame_psnr(a, b) == pytest.approx(10 * np.log10(255.0**2 / (255.0**2 / 192)))
    found = {id(a): (1.0, 2.0), id(b): (4.0, 6.0)}
    assert position_error(a, b, lambda f: found[id(f)]) == pytest.approx(5.0)
    assert position_error(a, b, lambda f: None if f is a else (0.0, 0.0)) == float("inf")
    assert np.isnan(position_error(a, b, lambda f: None))


def test_without_a_bundled_model_the_error_says_how_to_make_one(tmp_path, monkeypatch, capsys):
    import lol_dreamer.world_model as wm_mod

    monkeypatch.setattr(wm_mod, "DEFAULT_DIR", tmp_path / "empty")
    assert main(["demo", "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "no default world model is bundled" in err
    assert "lol-dreamer pipeline --out RUN" in err and "--world-model RUN/bc" in err


def test_a_dynamics_only_world_model_is_driven_by_the_scripted_player(run, tmp_path):
    from lol_dreamer.envs.demo import run_demo

    r = run_demo(str(run.out / "world_model"), tmp_path / "d", frames=3, seed=1, progress=False)
    assert r.actor == "scripted" and r.frames == 3 and r.dream.shape == r.real.shape
