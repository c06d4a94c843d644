"""load_world_model / save_world_model: the folder round-trips, and every kind of damage gets a clear error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from worldmodel_fixture import make_world_model

import lol_dreamer
from lol_dreamer import world_model as wm_mod
from lol_dreamer.checkpoint import load_state_dict_file
from lol_dreamer.world_model import load_world_model


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("wm")
    return {
        "dyn": make_world_model(root / "dyn", heads=False),
        "agent": make_world_model(root / "agent", heads=True),
    }


def test_dynamics_folder_round_trips(folders):
    wm = lol_dreamer.load_world_model(folders["dyn"])
    assert (wm.res, wm.n_z, wm.d_z, wm.k, wm.context_length, wm.fps) == (16, 8, 8, 4, 6, 20)
    assert not wm.has_heads and wm.heads is None
    assert wm.starts.latents.dtype == torch.float16 and tuple(wm.starts.latents.shape) == (
        6,
        4,
        8,
        8,
    )
    assert tuple(wm.starts.actions.shape) == (6, 4, 9) and wm.starts.tasks.tolist() == [
        0,
        1,
        2,
        0,
        1,
        2,
    ]
    assert tuple(wm.clips["frames"].shape) == (2, 4, 16, 16, 3)
    saved = load_state_dict_file(folders["dyn"] / "model.safetensors")
    for k, v in wm.dynamics.state_dict().items():
        assert torch.equal(v, saved[k]), k
    tok_saved = load_state_dict_file(folders["dyn"] / "tokenizer" / "model.safetensors")
    for k, v in wm.tokenizer.state_dict().items():
        assert torch.equal(v, tok_saved[k]), k
    assert not wm.dynamics.training and not any(p.requires_grad for p in wm.dynamics.parameters())


def test_agent_folder_has_heads_and_features_feed_them(folders):
    wm = load_world_model(folders["agent"])
    assert wm.has_heads and wm.config["kind"] == "agent"
    h = torch.randn(3, wm.dynamics.cfg.dim)
    r = wm.reward(h)
    assert r.shape == (3,) and torch.allclose(r, wm.heads.reward.predict(h, 0))
    p = wm.continue_prob(h)
    assert p.shape == (3,) and bool(((p > 0) & (p < 1)).all())


def test_encode_frames_matches_tokenizer(folders):
    wm = load_world_model(folders["dyn"])
    frames = wm.clips["frames"][:1]
    z = wm.encode_frames(frames)
    ref = wm.tokenizer.encode(frames.permute(0, 1, 4, 2, 3).float() / 255.0)
    assert torch.allclose(z, ref)
    with pytest.raises(ValueError, match="resize them"):
        wm.encode_frames(torch.zeros(1, 2, 8, 8, 3, dtype=torch.uint8))


def test_damaged_weights_name_the_file(folders, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folders["dyn"], bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"model\.safetensors.*damaged"):
        load_world_model(bad)


def test_config_weights_mismatch_is_explained(folders, tmp_path):
    bad = tmp_path / "mismatch"
    shutil.copytree(folders["dyn"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model"]["dim"] = 64
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"does not match.*load_model|shape mismatches"):
        load_world_model(bad)


def test_damaged_config_json(folders, tmp_path):
    bad = tmp_path / "badjson"
    shutil.copytree(folders["dyn"], bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        load_world_model(bad)


def test_missing_parts_are_named(folders, tmp_path):
    for part in ("starts.safetensors", "tokenizer"):
        bad = tmp_path / f"no-{part}"
        shutil.copytree(folders["dyn"], bad)
        target = bad / part
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        with pytest.raises(FileNotFoundError, match=part):
            load_world_model(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_world_model(tmp_path / "nowhere")


def test_start_clips_from_another_tokenizer(folders, tmp_path):
    from lol_dreamer.checkpoint import save_state_dict

    bad = tmp_path / "starts"
    shutil.copytree(folders["dyn"], bad)
    save_state_dict(
        bad / "starts.safetensors",
        {
            "latents": torch.zeros(2, 3, 5, 8, dtype=torch.float16),
            "actions": torch.zeros(2, 3, 9, dtype=torch.long),
            "tasks": torch.zeros(2, dtype=torch.long),
        },
    )
    with pytest.raises(ValueError, match="another tokenizer"):
        load_world_model(bad)


def test_default_model(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(wm_mod, "DEFAULT_DIR", tmp_path / "empty")
    with pytest.raises(
        FileNotFoundError, match=r"no default world model is bundled.*checkpoint=PATH"
    ):
        load_world_model(None)
    monkeypatch.setattr(wm_mod, "DEFAULT_DIR", folders["agent"])
    assert load_world_model(None).path == folders["agent"]
