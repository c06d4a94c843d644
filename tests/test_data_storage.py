"""Episode storage: exact round trips, laziness, atomicity, split rule, damage reporting."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import re

import numpy as np
import pytest

from lol_dreamer.actions import STAND, TASKS
from lol_dreamer.data import (
    DataError,
    add_to_index,
    open_dataset,
    read_index,
    rebuild_index,
    reserve_names,
    write_episode,
    write_latents,
)
from lol_dreamer.data.storage import index_entry


def make_episode(seed: int, t: int = 12, res: int = 8, state_dim: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    actions = np.concatenate([rng.integers(0, 19, (t, 1)), rng.integers(0, 2, (t, 8))], axis=1)
    term = np.zeros(t, bool)
    term[-1] = bool(seed % 2)
    return dict(
        frames=rng.integers(0, 256, (t, res, res, 3), dtype=np.uint8),
        actions=actions.astype(np.int64),
        labeled=rng.random(t) < 0.7,
        rewards=rng.normal(size=(t, 3)).astype(np.float32),
        task=seed % 3,
        terminated=term,
        state=rng.normal(size=(t, state_dim)).astype(np.float32),
        state_fields=[f"f{i}" for i in range(state_dim)],
    )


def test_round_trip_every_field_exact(tmp_path):
    eps = [make_episode(s, t=10 + s) for s in range(3)]
    names = [
        write_episode(tmp_path, **e, meta={"note": s}, fps=15, source="test")
        for s, e in enumerate(eps)
    ]
    assert names == ["ep_000000", "ep_000001", "ep_000002"]
    ds = open_dataset(tmp_path)
    assert len(ds) == 3 and ds.names == names
    assert ds.lengths.tolist() == [10, 11, 12] and ds.tasks.tolist() == [0, 1, 2]
    for s, (e, ep) in enumerate(zip(eps, ds)):
        assert len(ep) == 10 + s and ep.name == names[s] and ep.task == e["task"]
        for key in ("frames", "actions", "labeled", "rewards", "terminated", "state"):
            got = getattr(ep, key)
            assert got.dtype == np.asarray(e[key]).dtype, key
            np.testing.assert_array_equal(got, e[key], err_msg=key)
        assert ep.state_fields == e["state_fields"] and ep.latents is None
        assert (
            ep.meta["metadata"] == {"note": s}
            and ep.meta["fps"] == 15
            and ep.meta["source"] == "test"
        )
        assert ep.meta["resolution"] == 8 and ep.meta["task_name"] == TASKS[e["task"]]
    ep_meta = json.loads((tmp_path / "episodes" / "ep_000001" / "meta.json").read_text())
    assert ep_meta["files"]["frames.npy"]["shape"] == [11, 8, 8, 3]
    idx = read_index(tmp_path)
    assert idx["format"] == "lol-dreamer-episodes" and idx["version"] == 1
    assert idx["episodes"][2] == {
        "name": "ep_000002",
        "length": 12,
        "task": 2,
        "resolution": 8,
        "source": "test",
        "labeled_frames": int(eps[2]["labeled"].sum()),
        "has_state": True,
        "has_latents": False,
    }


def test_defaults_and_unlabeled_episode(tmp_path):
    frames = np.zeros((5, 4, 4, 3), np.uint8)
    write_episode(tmp_path, frames=frames, actions=None, task=1)
    ep = open_dataset(tmp_path)[0]
    assert (
        not ep.labeled.any()
        and (ep.actions[:, 0] == STAND).all()
        and (ep.actions[:, 1:] == 0).all()
    )
    assert (
        (ep.rewards == 0).all()
        and not ep.terminated.any()
        and ep.state is None
        and ep.state_fields is None
    )


def test_arrays_are_memory_mapped_and_lazy(tmp_path):
    write_episode(tmp_path, **make_episode(0))
    ep = open_dataset(tmp_path)[0]
    assert ep._cache == {}  # nothing loaded on open
    frames = ep.frames
    assert isinstance(frames, np.memmap) and not frames.flags.writeable
    assert set(ep._cache) == {"frames"}
    ds = open_dataset(tmp_path)
    _ = ds[0].frames
    clone = pickle.loads(pickle.dumps(ds))  # no array data travels with a pickled dataset
    assert len(pickle.dumps(ds)) < 2000 and clone._episodes == {}
    np.testing.assert_array_equal(clone[0].frames, ds[0].frames)


def test_latents_written_later(tmp_path):
    write_episode(tmp_path, **make_episode(0, t=6))
    z = np.random.default_rng(0).uniform(-1, 1, (6, 5, 3)).astype(np.float32)
    write_latents(tmp_path, "ep_000000", z, meta={"tokenizer": "runs/tok", "step": 7})
    ep = open_dataset(tmp_path)[0]
    assert ep.latents.dtype == np.float16 and ep.latents.shape == (6, 5, 3)
    np.testing.assert_array_equal(ep.latents, z.astype(np.float16))
    assert ep.meta["latents_meta"] == {"tokenizer": "runs/tok", "step": 7}
    assert read_index(tmp_path)["episodes"][0]["has_latents"] is True
    with pytest.raises(ValueError, match="T=6"):
        write_latents(tmp_path, "ep_000000", z[:5])


def test_bad_inputs_are_rejected_clearly(tmp_path):
    e = make_episode(0)
    with pytest.raises(ValueError, match="square"):
        write_episode(tmp_path, frames=np.zeros((3, 4, 5, 3), np.uint8), actions=None)
    bad = e["actions"].copy()
    bad[4, 0] = 19
    with pytest.raises(ValueError, match=r"actions\[4\]"):
        write_episode(tmp_path, **{**e, "actions": bad})
    with pytest.raises(ValueError, match="rewards"):
        write_episode(tmp_path, **{**e, "rewards": e["rewards"][:, :2]})
    with pytest.raises(ValueError, match="state_fields"):
        write_episode(tmp_path, **{**e, "state_fields": None})
    assert not (tmp_path / "index.json").exists()  # nothing half-written
    assert not (tmp_path / "episodes").exists() or not any((tmp_path / "episodes").iterdir())


def test_split_is_deterministic_disjoint_and_stable_under_append(tmp_path):
    for s in range(20):
        write_episode(tmp_path, **make_episode(s, t=4))
    ds = open_dataset(tmp_path)
    train, held = ds.split(held_out=0.25, seed=3)
    train2, held2 = open_dataset(tmp_path).split(held_out=0.25, seed=3)
    assert train.names == train2.names and held.names == held2.names
    assert set(train.names).isdisjoint(held.names) and sorted(train.names + held.names) == ds.names
    assert 0 < len(held) < 20
    assert held.names != ds.split(held_out=0.25, seed=4)[1].names
    for s in range(20, 30):
        write_episode(tmp_path, **make_episode(s, t=4))
    _, held_big = open_dataset(tmp_path).split(held_out=0.25, seed=3)
    assert set(held.names) == {n for n in held_big.names if n in ds.names}
    # tiny datasets still get both sides
    tr, he = ds.subset([0, 1]).split(held_out=0.1, seed=0)
    assert len(tr) == 1 and len(he) == 1
    assert ds.subset([3, 5])[1].name == "ep_000005" and ds[2:4].names == ["ep_000002", "ep_000003"]


def _truncate(path, nbytes):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - nbytes)


def test_truncated_file_names_the_file_others_readable(tmp_path):
    for s in range(3):
        write_episode(tmp_path, **make_episode(s))
    bad = tmp_path / "episodes" / "ep_000001" / "frames.npy"
    _truncate(bad, 10)
    ds = open_dataset(tmp_path)
    with pytest.raises(DataError, match=re.escape(str(bad))):
        ds[1]
    assert ds[0].frames.shape == (12, 8, 8, 3) and ds[2].frames.shape == (12, 8, 8, 3)


def test_corrupted_header_and_content_name_the_file(tmp_path):
    for s in range(2):
        write_episode(tmp_path, **make_episode(s))
    hdr = tmp_path / "episodes" / "ep_000000" / "actions.npy"
    raw = bytearray(hdr.read_bytes())
    raw[:6] = b"garbag"  # same size, broken magic
    hdr.write_bytes(bytes(raw))
    ep = open_dataset(tmp_path)[0]
    assert ep.frames.shape[0] == 12  # undamaged fields still load
    with pytest.raises(DataError, match=re.escape(str(hdr))):
        _ = ep.actions
    body = tmp_path / "episodes" / "ep_000001" / "rewards.npy"
    raw = bytearray(body.read_bytes())
    raw[-1] ^= 0xFF
    body.write_bytes(bytes(raw))
    ds = open_dataset(tmp_path)
    bad = ds.verify()
    assert [n for n, _ in bad] == ["ep_000000", "ep_000001"] and str(body) in bad[1][1]


def test_missing_meta_and_missing_file(tmp_path):
    for s in range(2):
        write_episode(tmp_path, **make_episode(s))
    (tmp_path / "episodes" / "ep_000000" / "labeled.npy").unlink()
    (tmp_path / "episodes" / "ep_000001" / "meta.json").write_text("{not json")
    ds = open_dataset(tmp_path)
    with pytest.raises(DataError, match=r"labeled\.npy is missing"):
        ds[0]
    with pytest.raises(DataError, match=r"ep_000001/meta.json is damaged"):
        ds[1]


def test_damaged_or_missing_index_says_how_to_fix(tmp_path):
    for s in range(3):
        write_episode(tmp_path, **make_episode(s))
    idx = tmp_path / "index.json"
    idx.write_text('{"format": "lol-dreamer-episodes", "episodes": [')
    with pytest.raises(DataError, match="rebuild_index"):
        open_dataset(tmp_path)
    idx.unlink()
    with pytest.raises(DataError, match=r"missing.*rebuild_index"):
        open_dataset(tmp_path)
    assert rebuild_index(tmp_path) == 3
    assert open_dataset(tmp_path).names == ["ep_000000", "ep_000001", "ep_000002"]
    with pytest.raises(FileNotFoundError, match="collect"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a lol-dreamer dataset"):
        open_dataset(tmp_path / "empty")


def _worker(args):
    root, seed, name = args
    return index_entry(
        json.loads(
            (
                root
                / "episodes"
                / write_episode(
                    root, **make_episode(seed, t=3), name=name, update_index=seed % 2 == 0
                )
                / "meta.json"
            ).read_text()
        )
    )


def test_concurrent_writers_keep_index_whole(tmp_path):
    names = reserve_names(tmp_path, 8)
    assert names == [f"ep_{i:06d}" for i in range(8)]
    assert reserve_names(tmp_path, 1) == ["ep_000008"]  # reservations are respected
    with mp.get_context("fork").Pool(4) as pool:
        entries = pool.map(_worker, [(tmp_path, s, n) for s, n in enumerate(names)])
    add_to_index(tmp_path, entries)  # the parent indexes; odd workers did not
    ds = open_dataset(tmp_path)
    assert ds.names == names
    assert [p.name for p in (tmp_path / "episodes").iterdir() if p.name.startswith(".")] == [
        ".ep_000008.reserved"
    ]
    assert write_episode(tmp_path, **make_episode(9, t=3)) == "ep_000009"
