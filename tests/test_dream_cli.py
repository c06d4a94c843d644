"""``lol-dreamer dream``: a dream beside the ground truth, as a video with the right frame count."""

from __future__ import annotations

import numpy as np
import pytest
from wm_train_fixture import RES, make_trained_world_model

from lol_dreamer.cli import main
from lol_dreamer.videoio import read_video


@pytest.fixture(scope="module")
def wm(tmp_path_factory):
    root = tmp_path_factory.mktemp("dream")
    _tok, _data, out = make_trained_world_model(root, n_starts=2, clip_frames=16)
    return out


@pytest.mark.parametrize("suffix", ["mp4", "gif"])
def test_dream_writes_dream_beside_truth(wm, tmp_path, capsys, suffix):
    out = tmp_path / f"dream.{suffix}"
    assert (
        main(
            ["dream", "--world-model", str(wm), "--frames", "5", "--out", str(out), "--scale", "2"]
        )
        == 0
    )
    video = read_video(out)
    assert video.shape[0] == 5
    assert video.shape[1:3] == (2 * RES, 2 * (2 * RES + 2))  # dream | gap | truth, upscaled 2×
    text = capsys.readouterr().out
    assert "frames/s" in text and str(out) in text


def test_dream_right_half_is_the_true_clip(wm, tmp_path):
    from lol_dreamer.dream_video import dream_clip
    from lol_dreamer.world_model import load_world_model

    w = load_world_model(wm)
    dream, truth, fps = dream_clip(w, clip=0, frames=4)
    assert dream.shape == truth.shape == (4, RES, RES, 3) and dream.dtype == np.uint8 and fps > 0
    np.testing.assert_array_equal(
        truth, w.clips["frames"][0, 8:12].numpy()
    )  # after the 8-frame context


def test_dream_caps_frames_at_the_clip_and_names_bad_clips(wm, tmp_path, capsys):
    out = tmp_path / "long.mp4"
    assert main(["dream", "--world-model", str(wm), "--frames", "100", "--out", str(out)]) == 0
    assert read_video(out).shape[0] == 16 - 8
    assert "dreaming 8 instead of 100" in capsys.readouterr().out
    assert (
        main(
            ["dream", "--world-model", str(wm), "--frames", "3", "--out", str(out), "--clip", "99"]
        )
        == 1
    )
    assert "--clip must be in" in capsys.readouterr().err
