import json

import numpy as np
import pytest
import torch
from _trainer_toys import build_toy

from lol_dreamer import checkpoint
from lol_dreamer.training.state import (
    RunState,
    capture_rng,
    load_run_state,
    restore_rng,
    save_run_state,
)

TOY = {"d_in": 4, "hidden": 8, "seed": 5}


@pytest.fixture(autouse=True)
def _toy_kind():
    checkpoint.register_builder("toy", build_toy)
    yield
    checkpoint.BUILDERS.pop("toy", None)


def _write_run(run, cfg=TOY):
    model = build_toy(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # weights unlike a fresh build
    (run).mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(
        json.dumps({"kind": "toy", "model": cfg, "train": {}, "data": None})
    )
    checkpoint.save_weights(run / "model.safetensors", model, config=cfg)
    return model


def test_round_trip_rebuilds_from_config_alone(tmp_path):
    model = _write_run(tmp_path / "run")
    loaded = checkpoint.load_model(tmp_path / "run")
    assert type(loaded) is type(model) and not loaded.training
    x = torch.randn(7, 4)
    assert torch.equal(loaded(x), model(x))


def test_tokenizer_kind_is_registered_lazily():
    assert checkpoint.BUILDERS["tokenizer"] == "lol_dreamer.models:build_tokenizer"
    with pytest.raises(ValueError, match="register_builder"):
        checkpoint._builder("nope")


def test_mismatch_lists_keys_and_names_the_config(tmp_path):
    _write_run(tmp_path / "run")
    other = build_toy({"d_in": 4, "hidden": 16})
    with pytest.raises(ValueError) as e:
        checkpoint.load_weights(tmp_path / "run" / "model.safetensors", other)
    msg = str(e.value)
    assert "shape mismatches" in msg and "0.weight: file (8, 4) vs model (16, 4)" in msg
    assert '"hidden": 8' in msg and "load_model" in msg
    deeper = torch.nn.Sequential(*build_toy(TOY), torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match=r"missing keys \(2\): \['3.weight', '3.bias'\]"):
        checkpoint.load_weights(tmp_path / "run" / "model.safetensors", deeper)


def test_damaged_and_missing_files(tmp_path):
    _write_run(tmp_path / "run")
    path = tmp_path / "run" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="damaged"):
        checkpoint.load_model(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        checkpoint.load_run_config(tmp_path)


def test_tied_weights_round_trip(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    m[1].weight = m[0].weight
    checkpoint.save_weights(tmp_path / "t.safetensors", m)
    m2 = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    checkpoint.load_weights(tmp_path / "t.safetensors", m2)
    assert torch.equal(m2[1].weight, m[0].weight)


def test_tree_codec_round_trip():
    tree = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)}},
        "groups": [
            {"betas": (0.9, 0.95), "lr": 1e-3, "params": [0], "x": None, "inf": float("inf")}
        ],
        "arr": np.arange(5, dtype=np.uint32),
    }
    tensors = {}
    enc = checkpoint.encode_tree(tree, tensors)
    dec = checkpoint.decode_tree(json.loads(json.dumps(enc)), tensors)
    assert list(dec["state"]) == [0] and torch.equal(
        dec["state"][0]["exp_avg"], tree["state"][0]["exp_avg"]
    )
    assert dec["groups"][0]["betas"] == (0.9, 0.95) and dec["groups"][0]["inf"] == float("inf")
    assert np.array_equal(dec["arr"], tree["arr"])


def test_run_state_and_rng_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    rng = capture_rng()
    a = (torch.rand(3), np.random.rand(3))
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    st = RunState(
        step=7,
        model={"w": torch.ones(2)},
        optimizer=opt.state_dict(),
        schedule={"kind": "x"},
        rng=[rng],
    )
    save_run_state(tmp_path, st)
    save_run_state(tmp_path, st)  # the swap over an existing state works
    back = load_run_state(tmp_path)
    assert back.step == 7 and torch.equal(back.model["w"], torch.ones(2)) and back.ema is None
    restore_rng(back.rng[0])
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not (tmp_path / ".state.old").exists()
