"""Exporting a finished pipeline as the bundled default model: layout, size limit, model card, loading."""

from __future__ import annotations

import json

import pytest
from pipeline_fixture import quick_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return quick_run(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    from lol_dreamer.export import export_default

    return export_default(run.out, tmp_path_factory.mktemp("assets") / "default")


def test_export_has_the_bundled_layout_without_training_state(exported):
    files = sorted(str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file())
    assert files == [
        "MODEL_CARD.md", "clips.safetensors", "config.json", "model.safetensors",
        "starts.safetensors", "tokenizer/config.json", "tokenizer/model.safetensors",
    ]  # fmt: skip
    total = sum((exported / f).stat().st_size for f in files)
    assert total <= 25 * 2**20
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["kind"] == "imagine" and cfg["exported_default"] is True
    assert not str(cfg["parent"]).startswith("/")  # no machine-specific paths


def test_exported_model_loads_as_the_default_world_model_and_dream_env(exported, run, monkeypatch):
    import gymnasium as gym
    import numpy as np
    import torch

    import lol_dreamer
    import lol_dreamer.world_model as wm_mod
    from lol_dreamer.checkpoint import load_state_dict_file
    from lol_dreamer.policy import load_policy

    monkeypatch.setattr(wm_mod, "DEFAULT_DIR", exported)
    wm = lol_dreamer.load_world_model(None)
    assert wm.path == exported and wm.has_heads
    src = load_state_dict_file(run.out / "pmpo" / "model.safetensors")
    dst = load_state_dict_file(exported / "model.safetensors")
    assert src.keys() == dst.keys() and all(torch.equal(src[k], dst[k]) for k in src)
    env = gym.make("LoLDream-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (wm.res, wm.res, 3) and obs.dtype == np.uint8
    policy = load_policy(exported, world_model=False)
    obs, *_ = env.step(policy.act(env))
    assert obs.shape == (wm.res, wm.res, 3)


def test_model_card_states_data_steps_hardware_metrics_and_command(exported, run):
    card = (exported / "MODEL_CARD.md").read_text()
    rec = run.record
    assert rec["command"] in card and "--export-default" in card
    assert f"{rec['hardware']['cpu_count']} CPUs" in card and rec["hardware"]["torch"] in card
    assert f"{rec['stages']['collect']['metrics']['episodes']} episodes" in card
    m = rec["stages"]["eval-tokenizer"]["metrics"]
    assert f"PSNR {m['psnr']:.2f} dB" in card
    for needle in ("| PSNR dB, model |", "copy-last floor", "champion position error", "Coherent horizon",
                   "Reward head MAE", "| scripted |", "| random |", "action following"):  # fmt: skip
        assert needle in card, needle
    steps = {"tokenizer": "steps_tokenizer", "dynamics": "steps_dynamics", "bc": "steps_agent",
             "pmpo": "steps_imagine"}  # fmt: skip
    assert rec["settings"]["trunk_lr_scale"] == 0.0  # the recipe freezes the transformer in phase 2
    labels = {"bc": "bc (transformer frozen)"}
    for stage, key in steps.items():
        row = f"| {labels.get(stage, stage)} | {rec['settings'][key]} |"
        assert row in card, row


def test_export_over_the_size_limit_is_refused(run, tmp_path):
    from lol_dreamer.export import export_default

    dest = tmp_path / "default"
    with pytest.raises(ValueError, match=r"over the 0\.01 MB limit"):
        export_default(run.out, dest, max_mb=0.01)
    assert not dest.exists()
    assert not list(tmp_path.glob(".default.tmp-*"))


def test_pipeline_command_exports_after_its_stages(run, tmp_path, capsys):
    from lol_dreamer.cli import main

    dest = tmp_path / "bundle"
    assert (
        main(
            ["pipeline", "--out", str(run.out), "--quick", "--export-default", str(dest), "--quiet"]
        )
        == 0
    )
    assert (dest / "MODEL_CARD.md").exists() and (dest / "tokenizer" / "model.safetensors").exists()
    assert f"Exported {run.out / 'pmpo'} as a default model: {dest}" in capsys.readouterr().out


def test_exported_model_is_evaluated_on_the_episodes_held_out_from_training(exported, run):
    """The card's world-model numbers come from held-out episodes; `eval world-model` on the
    exported folder must pick the same ones (its config keeps only the dataset's folder name)."""
    from lol_dreamer.data import open_dataset
    from lol_dreamer.evaluation.world_model_eval import held_out_episodes
    from lol_dreamer.world_model import load_world_model

    cfg = json.loads((exported / "config.json").read_text())
    bc = json.loads((run.out / "bc" / "config.json").read_text())
    held = cfg["data"]["held_out_episodes"]
    assert held and held == bc["data"]["held_out_episodes"]
    sub, note = held_out_episodes(load_world_model(exported), open_dataset(run.out / "data"))
    assert sorted(sub.names) == sorted(held) and "held out" in note
