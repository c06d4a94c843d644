"""``lol-dreamer train dynamics``: a self-contained world-model folder, metrics, resume, latents checks."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from wm_train_fixture import make_dataset, make_tokenizer_run

from lol_dreamer.cli import main
from lol_dreamer.data import open_dataset

ARGS = ["--preset", "test", "--batch-size", "1", "--eval-batches", "1", "--eval-every", "0",
        "--n-starts", "5", "--n-clips", "2", "--clip-frames", "12", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dyn")
    tok = make_tokenizer_run(root / "tok")
    data = make_dataset(root / "data", tok, n_episodes=3, length=20)
    return root, tok, data


def _train(data, tok, out, steps, *extra):
    argv = ["train", "dynamics", "--data", str(data), "--tokenizer", str(tok), "--out", str(out)]
    assert main([*argv, "--steps", str(steps), *ARGS, *extra]) == 0


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_world_model_folder_is_self_contained(setup):
    root, tok, data = setup
    out = root / "wm"
    _train(data, tok, out, 2)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "dynamics" and cfg["world_model"]["context"] == cfg["model"]["context"]
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert {"loss", "loss/flow", "loss/bootstrap"} <= set(r)
    assert "eval/loss" in rows[-1] and "eval/flow" in rows[-1]
    row = rows[-1]
    for k in ("eval/next_frame_mse", "eval/next_frame_ratio", "eval/copy_last_mse"):
        assert k in row and math.isfinite(row[k]), k
    assert "eval/flow_shuffled" not in row  # one sequence per batch: no other actions to give it
    # the tokenizer is copied byte for byte
    assert (out / "tokenizer/model.safetensors").read_bytes() == (
        tok / "model.safetensors"
    ).read_bytes()
    # start clips and clips come from held-out episodes only
    held = cfg["data"]["held_out_episodes"]
    ds = open_dataset(data)
    assert held and len(held) < len(ds)
    starts = load_file(str(out / "starts.safetensors"))
    c = cfg["model"]["context"]
    assert starts["latents"].dtype == torch.float16 and tuple(starts["latents"].shape) == (
        5,
        c,
        8,
        8,
    )
    assert tuple(starts["actions"].shape) == (5, c, 9) and tuple(starts["tasks"].shape) == (5,)
    clips = load_file(str(out / "clips.safetensors"))
    ep = ds[ds.names.index(held[0])]
    frames = clips["frames"][0].numpy()
    hits = [s for s in range(len(ep) - 12 + 1) if np.array_equal(ep.frames[s : s + 12], frames)]
    assert hits, "a stored clip must be a window of true held-out frames"
    np.testing.assert_array_equal(clips["actions"][0].numpy(), ep.actions[hits[0] : hits[0] + 12])
    from lol_dreamer.models.dynamics import latent_stats

    mean, std = latent_stats([ds[i].latents for i in range(len(ds)) if ds.names[i] not in held])
    # the folder alone is a world model: no dataset needed
    moved = root / "data_moved"
    shutil.move(str(data), moved)
    try:
        from lol_dreamer.world_model import load_world_model

        wm = load_world_model(out)
        assert wm.context_length == c and len(wm.starts) == 5 and not wm.has_heads
        # the model carries the training latents' scale (models/dynamics.py, "Latent scale")
        torch.testing.assert_close(wm.dynamics.latent_mean, mean)
        torch.testing.assert_close(wm.dynamics.latent_std, std.clamp_min(1e-3))
        sampler = wm.sampler(k=4)
        state = sampler.start(wm.starts.latents[:2].float(), wm.starts.actions[:2])
        z, _ = sampler.step(state, wm.starts.actions[:2, -1])
        assert z.shape == (2, 8, 8) and torch.isfinite(z).all()
    finally:
        shutil.move(str(moved), data)


def test_resume_matches_an_uninterrupted_run(setup, monkeypatch):
    from lol_dreamer.objectives.shortcut import ShortcutObjective

    root, tok, data = setup
    full, part = root / "full", root / "part"
    _train(data, tok, full, 4, "--save-every", "2")
    original = ShortcutObjective.__call__

    def crash_at_step_2(self, model, batch, step):
        if step == 2 and model.training:
            raise KeyboardInterrupt
        return original(self, model, batch, step)

    argv = ["train", "dynamics", "--data", str(data), "--tokenizer", str(tok), "--out", str(part)]
    argv += ["--steps", "4", "--save-every", "2", *ARGS]
    monkeypatch.setattr(ShortcutObjective, "__call__", crash_at_step_2)
    assert main(argv) == 130  # interrupted after the step-2 checkpoint
    monkeypatch.setattr(ShortcutObjective, "__call__", original)
    assert main(argv) == 1  # an existing run needs --resume
    assert main([*argv, "--resume"]) == 0
    assert [r["step"] for r in _rows(part)] == [1, 2, 3, 4]
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert _rows(part)[-1]["loss"] == _rows(full)[-1]["loss"]


def test_latents_from_another_tokenizer_are_refused(setup, tmp_path, capsys):
    _root, tok, data = setup
    other = make_tokenizer_run(tmp_path / "other", seed=1)
    argv = [
        "train",
        "dynamics",
        "--data",
        str(data),
        "--tokenizer",
        str(other),
        "--out",
        str(tmp_path / "wm"),
    ]
    assert main([*argv, "--steps", "1", *ARGS]) == 1
    err = capsys.readouterr().err
    assert "another tokenizer" in err and f"lol-dreamer tokenize --tokenizer {other}" in err
    # an episode without latents names the tokenize command too
    bare = tmp_path / "bare"
    make_dataset(bare, tok, n_episodes=2, length=12)
    index = json.loads((bare / "index.json").read_text())
    index["episodes"][0]["has_latents"] = False
    (bare / "index.json").write_text(json.dumps(index))
    argv = [
        "train",
        "dynamics",
        "--data",
        str(bare),
        "--tokenizer",
        str(tok),
        "--out",
        str(tmp_path / "wm2"),
    ]
    assert main([*argv, "--steps", "1", *ARGS]) == 1
    assert "have no latents" in capsys.readouterr().err


def test_time_every_and_context_frac_reach_the_run_config(setup, tmp_path):
    _root, tok, data = setup
    out = tmp_path / "wm"
    _train(data, tok, out, 1, "--time-every", "4", "--context-frac", "0.5")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["time_every"] == 4 and cfg["model"]["depth"] == 4  # test preset: 2 → 4
    assert cfg["objective"]["context_frac"] == 0.5


def test_kalman_skip_stores_the_measured_frame_correlation(setup, tmp_path):
    """``--kalman-skip on``: the run config says so and the weights carry the per-entry frame-to-frame
    correlation measured on the training latents; the saved world model rolls out and resumes."""
    from lol_dreamer.checkpoint import load_state_dict_file
    from lol_dreamer.models.dynamics import latent_rho, latent_stats
    from lol_dreamer.world_model_training import open_latent_split

    _root, tok, data = setup
    out = tmp_path / "wm"
    _train(data, tok, out, 2, "--kalman-skip", "on", "--zero-init-out", "on")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["kalman_skip"] is True and cfg["model"]["zero_init_out"] is True
    rho = load_state_dict_file(out / "model.safetensors")["latent_rho"]
    d = cfg["data"]
    split = open_latent_split(data, tok, d["held_out"], d["split_seed"])
    eps = [ep.latents for ep in split.train]
    want = latent_rho(eps, *latent_stats(eps)).clamp(0, 0.999)  # a fresh measurement agrees
    torch.testing.assert_close(rho, want)
    assert float(rho.mean()) > 0.05  # consecutive frames of the toy episodes really correlate
    _train(data, tok, out, 3, "--resume")
    assert json.loads((out / "config.json").read_text())["model"]["kalman_skip"] is True
