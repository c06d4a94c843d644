"""Samplers: shapes/dtypes, exact window contents, determinism by (seed, step), rank sharding, mixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lol_dreamer.data import (
    MixtureSampler,
    SequenceSampler,
    open_dataset,
    write_episode,
    write_latents,
)

RES = 6


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """12 episodes of lengths 3..14; tasks cycle; frame pixel 0 encodes (episode, t)."""
    root = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(0)
    for e in range(12):
        t = 3 + e
        frames = rng.integers(0, 256, (t, RES, RES, 3), dtype=np.uint8)
        frames[:, 0, 0, 0] = e
        frames[:, 0, 0, 1] = np.arange(t)
        rewards = np.zeros((t, 3), np.float32)
        if e % 3 == 1 and e >= 4:  # fight episodes (task 1) with one rewarded frame
            rewards[t // 2, 1] = 1.5
        rewards[:, 0] = 0.25  # farm reward everywhere; irrelevant to task 1
        actions = np.concatenate([rng.integers(0, 19, (t, 1)), rng.integers(0, 2, (t, 8))], 1)
        write_episode(
            root,
            frames=frames,
            actions=actions,
            labeled=rng.random(t) < 0.5,
            rewards=rewards,
            task=e % 3,
            terminated=np.arange(t) == t - 1,
            state=rng.normal(size=(t, 2)).astype(np.float32),
            state_fields=["x", "y"],
        )
        write_latents(root, f"ep_{e:06d}", rng.uniform(-1, 1, (t, 4, 2)))
    return open_dataset(root)


ALL = ("frames", "latents", "actions", "labeled", "rewards", "terminated", "state")


@pytest.mark.parametrize("seq_len", [1, 5, 14])
def test_shapes_dtypes_and_exact_contents(ds, seq_len):
    s = SequenceSampler(ds, seq_len, 4, seed=1, fields=ALL)
    b = s.sample(0)
    assert b["frames"].shape == (4, seq_len, 3, RES, RES) and b["frames"].dtype == torch.float32
    assert b["frames"].min() >= 0.0 and b["frames"].max() <= 1.0
    assert b["latents"].shape == (4, seq_len, 4, 2) and b["latents"].dtype == torch.float32
    assert b["actions"].shape == (4, seq_len, 9) and b["actions"].dtype == torch.int64
    assert b["labeled"].dtype == torch.bool and b["labeled"].shape == (4, seq_len)
    assert b["rewards"].shape == (4, seq_len, 3) and b["rewards"].dtype == torch.float32
    assert b["terminated"].dtype == torch.bool and b["state"].shape == (4, seq_len, 2)
    assert b["task"].shape == (4,) and b["task"].dtype == torch.int64
    for i in range(4):
        ep = ds[int(b["episode"][i])]
        st = int(b["start"][i])
        assert len(ep) >= seq_len and st + seq_len <= len(ep)
        sl = slice(st, st + seq_len)
        want = torch.from_numpy(np.array(ep.frames[sl])).permute(0, 3, 1, 2).float() / 255
        torch.testing.assert_close(b["frames"][i], want, rtol=0, atol=0)
        assert torch.equal(b["actions"][i], torch.from_numpy(np.array(ep.actions[sl])))
        assert torch.equal(b["labeled"][i], torch.from_numpy(np.array(ep.labeled[sl])))
        assert torch.equal(
            b["latents"][i], torch.from_numpy(np.array(ep.latents[sl]).astype(np.float32))
        )
        assert torch.equal(b["state"][i], torch.from_numpy(np.array(ep.state[sl])))
        assert int(b["task"][i]) == ep.task
        # the frame stamp says which episode and which time step the row came from
        assert round(float(b["frames"][i, 0, 0, 0, 0]) * 255) == int(b["episode"][i])
        assert [round(float(v) * 255) for v in b["frames"][i, :, 1, 0, 0]] == list(
            range(st, st + seq_len)
        )


def test_short_episodes_skipped_and_windows_uniform(ds):
    s = SequenceSampler(ds, 10, 64, seed=0)
    assert set(s.episodes.tolist()) == {7, 8, 9, 10, 11}  # lengths 10..14
    assert s.num_windows == sum(len(ds[int(e)]) - 10 + 1 for e in s.episodes)
    counts = np.zeros(12)
    for step in range(40):
        b = SequenceSampler(ds, 10, 64, seed=0, fields=("labeled",)).sample(step)
        np.add.at(counts, b["episode"].numpy(), 1)
    share = counts[7:] / counts.sum()
    np.testing.assert_allclose(share, np.array([1, 2, 3, 4, 5]) / 15, atol=0.03)
    with pytest.raises(ValueError, match="longest: 14"):
        SequenceSampler(ds, 15, 2)


def test_deterministic_by_seed_and_step_and_resumable(ds):
    a = SequenceSampler(ds, 3, 5, seed=7, fields=("actions", "frames"))
    b = SequenceSampler(ds, 3, 5, seed=7, fields=("actions", "frames"))
    assert torch.equal(a.sample(11)["frames"], b.sample(11)["frames"])
    it = iter(a)
    batches = [next(it) for _ in range(4)]
    b.start_step = 2
    resumed = next(iter(b))
    assert torch.equal(resumed["start"], batches[2]["start"]) and torch.equal(
        resumed["episode"], batches[2]["episode"]
    )
    assert not torch.equal(a.sample(0)["start"], a.sample(1)["start"])
    c = SequenceSampler(ds, 3, 5, seed=8, fields=("actions",))
    assert not (
        torch.equal(a.sample(0)["start"], c.sample(0)["start"])
        and torch.equal(a.sample(0)["episode"], c.sample(0)["episode"])
    )


def test_rank_sharding(ds):
    ranks = [
        SequenceSampler(ds, 3, 32, seed=0, fields=("labeled",), rank=r, world_size=3)
        for r in range(3)
    ]
    draws = [torch.stack([r.sample(0)["episode"], r.sample(0)["start"]]) for r in ranks]
    assert not torch.equal(draws[0], draws[1])  # independent per-rank streams
    assert all(set(r.episodes.tolist()) == set(range(12)) for r in ranks)
    shards = [
        SequenceSampler(
            ds, 3, 32, seed=0, fields=("labeled",), rank=r, world_size=3, shard="episodes"
        )
        for r in range(3)
    ]
    seen = [
        set(np.concatenate([s.sample(k)["episode"].numpy() for k in range(5)]).tolist())
        for s in shards
    ]
    for r in range(3):
        assert seen[r] <= {e for e in range(12) if e % 3 == r}
    assert (
        seen[0].isdisjoint(seen[1]) and seen[1].isdisjoint(seen[2]) and seen[0].isdisjoint(seen[2])
    )
    with pytest.raises(ValueError, match="rank"):
        SequenceSampler(ds, 3, 2, rank=3, world_size=3)


def test_mixture_relevant_windows_carry_task_reward(ds):
    m = MixtureSampler(ds, 4, 10, task=1, seed=0, fields=("rewards", "frames"))
    assert m.n_relevant == 5
    for step in range(10):
        b = m.sample(step)
        rel = b["relevant"]
        assert rel.tolist() == [True] * 5 + [False] * 5
        assert (b["task"][rel] == 1).all()
        assert (
            (b["rewards"][rel][..., 1] != 0).any(dim=1).all()
        )  # every relevant window carries fight reward
    # the relevant pool is exactly the windows that contain the rewarded frame
    want = 0
    for e in range(12):
        t = 3 + e
        if e % 3 == 1 and e >= 4 and t >= 4:
            r = t // 2
            want += sum(1 for s in range(t - 4 + 1) if s <= r < s + 4)
    assert m.num_relevant_windows == want
    b1, b2 = m.sample(3), MixtureSampler(ds, 4, 10, task=1, seed=0, fields=("rewards",)).sample(3)
    assert torch.equal(b1["start"], b2["start"]) and torch.equal(b1["episode"], b2["episode"])
    with pytest.raises(ValueError, match="non-zero"):
        MixtureSampler(ds, 4, 4, task=2)  # push episodes carry no push reward
    assert MixtureSampler(ds, 4, 4, task=2, relevant_fraction=0.0).sample(0)["relevant"].sum() == 0


def test_missing_latents_error(tmp_path):
    write_episode(tmp_path, frames=np.zeros((4, 2, 2, 3), np.uint8), actions=None)
    with pytest.raises(ValueError, match="tokenize"):
        SequenceSampler(open_dataset(tmp_path), 2, 1, fields=("latents",)).sample(0)
