"""Phase 3 on the real pipeline: train dynamics → train agent → train imagine, each a tiny CLI run."""

from __future__ import annotations

import json

import numpy as np
import torch
from wm_train_fixture import make_trained_world_model

from lol_dreamer.checkpoint import load_state_dict_file
from lol_dreamer.cli import main


def test_train_imagine_on_a_train_agent_folder(tmp_path):
    from lol_dreamer.agents.imagine import ImagineConfig, build_imagination
    from lol_dreamer.policy import load_policy

    quiet = ["--quiet", "--device", "cpu"]
    _tok, data, wm = make_trained_world_model(tmp_path, extra=tuple(quiet))
    bc, pmpo = tmp_path / "bc", tmp_path / "pmpo"
    argv = [
        "train",
        "agent",
        "--world-model",
        str(wm),
        "--data",
        str(data),
        "--out",
        str(bc),
        "--task",
        "farm",
    ]
    argv += [
        "--mtp",
        "2",
        "--heads-preset",
        "test",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--eval-batches",
        "1",
    ]
    assert main([*argv, *quiet]) == 0
    argv = [
        "train",
        "imagine",
        "--agent",
        str(bc),
        "--data",
        str(data),
        "--out",
        str(pmpo),
        "--steps",
        "2",
    ]
    argv += ["--horizon", "3", "--batch", "2", "--lr", "1e-2"]
    assert main([*argv, *quiet]) == 0

    cfg = json.loads((pmpo / "config.json").read_text())
    bc_cfg = json.loads((bc / "config.json").read_text())
    assert cfg["kind"] == "imagine" and cfg["parent"] == str(bc.resolve()) and cfg["task"] == "farm"
    assert cfg["act_distance"] == bc_cfg["act_distance"] == 0
    assert cfg["model"]["dynamics"] == bc_cfg["model"]["dynamics"]
    held = set(bc_cfg["data"]["held_out_episodes"])
    assert held and not held & set(cfg["data"]["episodes"])  # contexts avoid the held-out episodes
    rows = [json.loads(x) for x in (pmpo / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss_kl"] == 0.0 and rows[1]["loss_kl"] > 0.0
    assert all(np.isfinite(r["imagined_return"]) for r in rows)
    mine, parent = (
        load_state_dict_file(pmpo / "model.safetensors"),
        load_state_dict_file(bc / "model.safetensors"),
    )
    for k, v in parent.items():
        if k.startswith(("dynamics.", "heads.reward.", "heads.cont.")):
            assert torch.equal(mine[k], v), k
    assert any(k.startswith("heads.value.") for k in mine)

    # the prior of a phase-3 run on this folder is its trained policy head at the acting distance
    im = build_imagination(bc, ImagineConfig(horizon=2, batch=2), data=data)
    im.rollouts.close()
    w = parent["heads.policy.out.weight"][0]
    assert w.abs().sum() > 0 and torch.equal(im.loss.prior.out.weight[0], w)

    # the phase-3 folder acts from frames like any agent run
    policy = load_policy(pmpo, task="farm")
    frame = np.zeros((16, 16, 3), np.uint8)
    a0, a1 = policy(frame), policy(frame)
    assert a0.shape == a1.shape == (9,) and a0.dtype == np.int64
