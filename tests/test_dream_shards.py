"""ShardedDreamBatch: shards step in parallel and behave like one DreamBatch per row range."""

from __future__ import annotations

import itertools

import pytest
import torch
from test_dream_batch import cnn_world_model  # noqa: F401  (module-scoped fixture)

from lol_dreamer.envs.dream_batch import DreamBatch
from lol_dreamer.envs.dream_shards import ShardedDreamBatch, shard_bounds


def test_shard_bounds_cover_every_row_once():
    assert shard_bounds(64, 2) == [(0, 32), (32, 64)]
    assert shard_bounds(5, 3) == [(0, 2), (2, 3), (3, 5)]
    for n, s in ((7, 1), (7, 7), (10, 4)):
        b = shard_bounds(n, s)
        assert (
            b[0][0] == 0 and b[-1][1] == n and all(x[1] == y[0] for x, y in itertools.pairwise(b))
        )
    with pytest.raises(ValueError, match="shards must be in"):
        shard_bounds(3, 4)


def _start(wm, n):
    st = wm.starts
    idx = torch.arange(n) % st.latents.shape[0]
    return st.latents[idx].float(), st.actions[idx], st.tasks[idx]


def _actions(n, t):
    g = torch.Generator().manual_seed(t)
    move = torch.randint(0, 19, (n, 1), generator=g)
    return torch.cat((move, torch.randint(0, 2, (n, 8), generator=g)), 1)


def _run(batch, n, steps=4, reset_at=None, rows=None):
    batch.seed(11)
    batch.reset(None, *_start(batch.wm, n))
    out = []
    for t in range(steps):
        if t == reset_at:
            m = int(rows.sum())
            lat, act, task = _start(batch.wm, m)
            frames = batch.reset(rows, lat.flip(0), act.flip(0), task.flip(0))
            assert frames.shape[0] == m
        out.append(batch.step(_actions(n, t)))
    return out


def test_one_shard_equals_a_dream_batch_and_runs_repeat(cnn_world_model):  # noqa: F811
    wm = cnn_world_model
    plain = _run(DreamBatch(wm, 4, decode_dtype="float32", overlap_decode=False), 4)
    one = ShardedDreamBatch(wm, 4, 1, decode_dtype="float32")
    assert one.state is None
    sharded = _run(one, 4)
    assert one.state is not None
    for a, b in zip(plain, sharded, strict=True):
        assert torch.equal(a.latent, b.latent) and torch.equal(a.frames, b.frames)
    two = ShardedDreamBatch(wm, 4, 2, decode_dtype="float32")
    first, again = _run(two, 4), _run(two, 4)
    for a, b in zip(first, again, strict=True):  # same seed, same shards: the same dream
        assert torch.equal(a.latent, b.latent) and torch.equal(a.frames, b.frames)
    assert two.latent.shape == (4, wm.n_z, wm.d_z) and two.tasks.shape == (4,)
    for b in (one, two):
        b.close()


def test_partial_reset_touches_only_its_rows_in_every_shard(cnn_world_model):  # noqa: F811
    wm = cnn_world_model
    batch = ShardedDreamBatch(wm, 6, 2, decode_dtype="float32")
    rows = torch.tensor([False, True, False, False, False, True])
    base = _run(batch, 6)
    reset = _run(batch, 6, reset_at=2, rows=rows)
    keep = ~rows
    for t, (a, b) in enumerate(zip(base, reset, strict=True)):
        assert torch.equal(a.latent[keep], b.latent[keep])  # other streams: untouched
        if t >= 2:
            assert not torch.equal(a.latent[rows], b.latent[rows])
    with pytest.raises(ValueError, match="start clips given"):
        batch.reset(rows, *_start(wm, 3))
    batch.close()


def test_auto_shards_is_the_default_of_the_batched_envs(cnn_world_model, monkeypatch):  # noqa: F811
    import lol_dreamer.envs.dream_shards as ds
    from lol_dreamer.envs.dream_vector import DreamVectorEnv
    from lol_dreamer.envs.torchrl_env import DreamTorchEnv

    monkeypatch.setattr(ds, "_usable_cores", lambda: 2)
    cpu = torch.device("cpu")
    assert ds.auto_shards(cpu, 64) == 2 and ds.auto_shards(cpu, 32) == 2
    assert ds.auto_shards(cpu, 31) == 1 and ds.auto_shards(cpu, 1) == 1  # ≥ 16 dreams a shard
    assert ds.auto_shards(torch.device("cuda"), 64) == 1
    monkeypatch.setattr(ds, "_usable_cores", lambda: 8)
    assert ds.auto_shards(cpu, 64) == 4 and ds.auto_shards(cpu, 256) == 8
    monkeypatch.setattr(ds, "_usable_cores", lambda: 2)
    wm = cnn_world_model
    for make, attr in (
        (lambda **kw: DreamVectorEnv(32, world_model=wm, decode=False, **kw), "batch"),
        (lambda **kw: DreamTorchEnv(world_model=wm, num_envs=32, decode=False, **kw), "dream"),
    ):
        batch = getattr(make(), attr)
        assert isinstance(batch, ShardedDreamBatch) and len(batch.shards) == 2
        batch.close()
        single = getattr(make(shards=1), attr)
        assert isinstance(single, DreamBatch)
        single.close()
