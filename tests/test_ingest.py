"""Ingest: a short mp4 written here with PyAV, with and without an actions CSV, and clear errors."""

from __future__ import annotations

import av
import numpy as np
import pytest

from lol_dreamer.actions import STAND
from lol_dreamer.cli import main
from lol_dreamer.data import open_dataset
from lol_dreamer.data.ingest import center_crop_resize, ingest_video, read_actions_csv

N, W, H = 12, 96, 64  # landscape source: the centre crop keeps x in [16, 80)


def source_frame(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :32] = (200, 30, 30)  # red: only x 16..32 survives the crop
    img[:, 32:64] = (30, 200, 30)  # green centre
    img[:, 64:] = (30, 30, 200)  # blue: x 64..80 survives
    img[:16, :, :] = 10 + 20 * i  # top band: brightness encodes the frame number
    return img


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=20)
        s.width, s.height, s.pix_fmt = W, H, "yuv444p"
        s.options = {"crf": "0", "preset": "ultrafast"}
        for i in range(N):
            for pkt in s.encode(av.VideoFrame.from_ndarray(source_frame(i), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def test_center_crop_resize_exact_on_blocks():
    img = np.zeros((4, 8, 3), np.uint8)
    img[:, 2:4] = 100
    img[:, 4:6] = 200
    out = center_crop_resize(img, 2)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[:, 0].tolist() == [[100] * 3] * 2 and out[:, 1].tolist() == [[200] * 3] * 2
    assert center_crop_resize(np.zeros((10, 6, 3), np.uint8), 6).shape == (6, 6, 3)


def test_ingest_unlabeled(video, tmp_path):
    name, s = ingest_video(video, tmp_path, res=32, task="push")
    assert s["frames"] == N and s["labeled"] == 0 and s["fps"] == pytest.approx(20.0)
    ep = open_dataset(tmp_path)[0]
    assert (
        ep.name == name
        and ep.task == 2
        and ep.meta["source"] == "video"
        and ep.meta["fps"] == pytest.approx(20.0)
    )
    assert ep.frames.shape == (N, 32, 32, 3) and ep.frames.dtype == np.uint8
    assert (
        not ep.labeled.any()
        and (ep.actions[:, 0] == STAND).all()
        and (ep.actions[:, 1:] == 0).all()
    )
    assert (ep.rewards == 0).all() and ep.state is None and ep.meta["metadata"]["source_width"] == W
    f = ep.frames.astype(int)
    # the crop kept red | green | blue in quarter | half | quarter of the width
    np.testing.assert_allclose(f[0, 20, 2], (200, 30, 30), atol=12)
    np.testing.assert_allclose(f[0, 20, 16], (30, 200, 30), atol=12)
    np.testing.assert_allclose(f[0, 20, 29], (30, 30, 200), atol=12)
    # frames are in order: the top band brightness is 10 + 20 i
    np.testing.assert_allclose(f[:, 2, 16].mean(-1), 10 + 20 * np.arange(N), atol=6)


def test_ingest_with_csv(video, tmp_path):
    csv = tmp_path / "actions.csv"
    csv.write_text(
        "frame,move,Q,W,E,R,D,F,item,B,reward_farm,reward_fight,reward_push,terminated\n"
        "0,3,1,0,0,0,0,0,0,0,0.5,0,0,0\n"
        "2,18,0,0,0,1,0,0,0,1,0,-1.25,0,0\n"
        f"{N - 1},17,0,1,0,0,0,0,1,0,0,0,2,1\n"
    )
    ingest_video(video, tmp_path / "ds", actions_csv=csv, res=16, task="fight")
    ep = open_dataset(tmp_path / "ds")[0]
    assert np.flatnonzero(ep.labeled).tolist() == [0, 2, N - 1]
    assert ep.actions[0].tolist() == [3, 1, 0, 0, 0, 0, 0, 0, 0]
    assert ep.actions[2].tolist() == [18, 0, 0, 0, 1, 0, 0, 0, 1]
    assert ep.actions[N - 1].tolist() == [17, 0, 1, 0, 0, 0, 0, 1, 0]
    assert (ep.actions[1, 0] == STAND) and not ep.labeled[1]
    np.testing.assert_array_equal(
        ep.rewards[[0, 2, N - 1]], [[0.5, 0, 0], [0, -1.25, 0], [0, 0, 2]]
    )
    assert np.flatnonzero(ep.terminated).tolist() == [N - 1] and ep.task == 1
    # only the required columns: keys/rewards default to 0
    short = tmp_path / "short.csv"
    short.write_text("frame,move\n4,9\n")
    assert read_actions_csv(short).rows[4][0].tolist() == [9, 0, 0, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "text, match",
    [
        ("move,frame,Qkey\n0,0,1\n", r"line 1: unknown column.*Qkey"),
        ("frame,Q\n0,1\n", r"line 1: missing required column.*move"),
        ("frame,move,Q\n0,3,1\n1,19,0\n", r"line 3, column 'move': 19 is out of range 0\.\.18"),
        (
            "frame,move,reward_farm\n0,3,abc\n",
            r"line 2, column 'reward_farm': 'abc' is not a number",
        ),
        ("frame,move\n0,3\n0,4\n", r"line 3.*frame 0 already given on line 2"),
        ("frame,move\n0,3,1\n", r"line 2: 3 values but the header has 2"),
        ("", r"empty"),
    ],
)
def test_bad_csv_names_row_and_column(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_actions_csv(p)


def test_csv_frame_beyond_video_and_bad_video(video, tmp_path):
    p = tmp_path / "far.csv"
    p.write_text(f"frame,move\n1,2\n{N + 5},3\n")
    with pytest.raises(
        ValueError,
        match=rf"line 3, column 'frame': frame {N + 5} but the video has only {N} frames",
    ):
        ingest_video(video, tmp_path / "ds", actions_csv=p, res=16)
    assert not (tmp_path / "ds" / "index.json").exists()
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="cannot read video"):
        ingest_video(fake, tmp_path / "ds", res=16)
    assert [p.name for p in (tmp_path / "ds").iterdir() if p.name.startswith(".ingest")] == []


def test_cli_ingest(video, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["ingest", str(video), "--out", str(out), "--res", "16", "--max-frames", "5"]) == 0
    assert main(["ingest", str(video), "--out", str(out), "--res", "16"]) == 0  # appends
    ds = open_dataset(out)
    assert ds.lengths.tolist() == [5, N]
    assert "unlabeled" in capsys.readouterr().out
    assert main(["ingest", str(tmp_path / "missing.mp4"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
