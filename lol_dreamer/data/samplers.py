"""Training samplers: random windows of T frames from many episodes, deterministic and resumable.

Every batch is a pure function of ``(seed, step, rank)``: ``sample(step)`` draws from
``np.random.default_rng([seed, step, rank])``, so resuming a run at step k reproduces exactly the
batches an uninterrupted run would have drawn, with no sampler state to save.

Output keys and shapes (``B`` batch, ``T`` window length):

| key          | dtype   | shape              | notes                                        |
|--------------|---------|--------------------|----------------------------------------------|
| frames       | float32 | [B, T, 3, H, W]    | in [0, 1]                                    |
| latents      | float32 | [B, T, n_z, d_z]   | needs ``lol-dreamer tokenize`` first          |
| actions      | int64   | [B, T, 9]          |                                              |
| labeled      | bool    | [B, T]             |                                              |
| rewards      | float32 | [B, T, 3]          | order ``TASKS``                               |
| terminated   | bool    | [B, T]             |                                              |
| state        | float32 | [B, T, S]          | LaneSim episodes only                        |
| task         | int64   | [B]                | always present                               |
| episode      | int64   | [B]                | position in the dataset; always present      |
| start        | int64   | [B]                | first frame of the window; always present    |
| relevant     | bool    | [B]                | :class:`MixtureSampler` only                 |

Episodes shorter than T are skipped (never padded); a window never crosses an episode boundary.

DDP: with ``shard="seed"`` (default) every rank samples the whole dataset with its own stream
(``rank`` is part of the seed), so ranks draw independent, not disjoint, batches. With
``shard="episodes"`` episode i belongs to rank ``i % world_size`` only, so ranks read disjoint
episodes (use it when each rank should see distinct data, e.g. many more episodes than ranks).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from lol_dreamer.data.dataset import Dataset

SEQUENCE_FIELDS = ("frames", "latents", "actions", "labeled", "rewards", "terminated", "state")


def _to_tensor(key: str, arr: np.ndarray) -> torch.Tensor:
    if key == "frames":
        # [B, T, H, W, 3] uint8 → [B, T, 3, H, W] float32 in [0, 1]
        return torch.from_numpy(arr).permute(0, 1, 4, 2, 3).float().div_(255.0).contiguous()
    if key in ("latents", "state", "rewards"):
        return torch.from_numpy(arr.astype(np.float32, copy=False))
    return torch.from_numpy(arr)


class SequenceSampler:
    """Uniform random windows of ``seq_len`` frames across episodes (every valid window equally likely).

    Args:
        dataset: a :class:`~lol_dreamer.data.dataset.Dataset` (e.g. the train side of ``split``).
        seq_len: window length T (any T up to the longest episode).
        batch_size: windows per batch B.
        seed: base seed; batch ``step`` of rank ``rank`` uses ``default_rng([seed, step, rank])``.
        fields: which per-frame fields to return (see the module table).
        rank, world_size: DDP position; see ``shard``.
        shard: ``"seed"`` (independent per-rank streams over all episodes) or ``"episodes"``
            (disjoint episode shards, episode i on rank ``i % world_size``).

    Example:
        >>> s = SequenceSampler(open_dataset("data/lane"), seq_len=16, batch_size=8)  # doctest: +SKIP
        >>> batch = s.sample(step=0); batch["frames"].shape  # [8, 16, 3, 128, 128]
    """

    def __init__(
        self,
        dataset: Dataset,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        fields: Sequence[str] = ("frames", "actions", "labeled"),
        rank: int = 0,
        world_size: int = 1,
        shard: str = "seed",
    ):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(
                f"seq_len and batch_size must be positive, got {seq_len}, {batch_size}"
            )
        unknown = [f for f in fields if f not in SEQUENCE_FIELDS]
        if unknown:
            raise ValueError(f"unknown fields {unknown}; choose from {', '.join(SEQUENCE_FIELDS)}")
        if not 0 <= rank < world_size:
            raise ValueError(
                f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}"
            )
        if shard not in ("seed", "episodes"):
            raise ValueError(f"shard must be 'seed' or 'episodes', got {shard!r}")
        self.dataset = dataset
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.fields = tuple(fields)
        self.rank, self.world_size, self.shard = int(rank), int(world_size), shard
        self.start_step = 0

        lengths = dataset.lengths
        eligible = np.arange(len(dataset))
        if shard == "episodes":
            eligible = eligible[eligible % world_size == rank]
        eligible = eligible[lengths[eligible] >= self.seq_len]
        if len(eligible) == 0:
            longest = int(lengths.max()) if len(lengths) else 0
            raise ValueError(
                f"no episode{' of this rank' if shard == 'episodes' else ''} has {self.seq_len} frames "
                f"(longest: {longest}); use a shorter seq_len or collect longer episodes"
            )
        self.episodes = eligible
        windows = lengths[eligible] - self.seq_len + 1
        self._cum = np.cumsum(windows)

    @property
    def num_windows(self) -> int:
        """How many distinct windows this sampler draws from."""
        return int(self._cum[-1])

    def _draw_uniform(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        w = rng.integers(0, self.num_windows, size=n)
        k = np.searchsorted(self._cum, w, side="right")
        before = np.concatenate([[0], self._cum[:-1]])[k]
        return self.episodes[k], w - before

    def _gather(self, episodes: np.ndarray, starts: np.ndarray) -> dict[str, torch.Tensor]:
        t = self.seq_len
        out: dict[str, torch.Tensor] = {}
        for key in self.fields:
            rows = []
            for e, s in zip(episodes, starts):
                arr = self.dataset[int(e)].field(key)
                if arr is None:
                    name = self.dataset.entries[int(e)]["name"]
                    hint = (
                        "run `lol-dreamer tokenize` on the dataset"
                        if key == "latents"
                        else "drop it from fields"
                    )
                    raise ValueError(f"episode {name} has no {key}; {hint}")
                rows.append(np.asarray(arr[int(s) : int(s) + t]))
            out[key] = _to_tensor(key, np.stack(rows))
        out["task"] = torch.from_numpy(self.dataset.tasks[episodes].astype(np.int64))
        out["episode"] = torch.from_numpy(episodes.astype(np.int64))
        out["start"] = torch.from_numpy(starts.astype(np.int64))
        return out

    def rng(self, step: int) -> np.random.Generator:
        """The generator of batch ``step`` on this rank."""
        return np.random.default_rng([self.seed, int(step), self.rank])

    def sample(self, step: int) -> dict[str, torch.Tensor]:
        """Batch number ``step`` (a pure function of seed, step, rank)."""
        episodes, starts = self._draw_uniform(self.rng(step), self.batch_size)
        return self._gather(episodes, starts)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches from ``self.start_step`` on (set it to resume)."""
        step = self.start_step
        while True:
            yield self.sample(step)
            step += 1


class MixtureSampler(SequenceSampler):
    """The phase-2 mixture: uniform windows plus task-relevant windows (SPEC §7).

    A task-relevant window comes from an episode of ``task`` and contains at least one frame
    with a non-zero reward for that task. The first ``round(relevant_fraction * B)`` rows of a
    batch are relevant (``relevant[b] = True``), the rest uniform over all windows; phase 2
    applies behaviour cloning to the relevant rows and the video loss to the uniform rows.

    Args:
        task: task id whose reward defines relevance.
        relevant_fraction: share of relevant rows per batch (default 0.5).
        Other arguments as :class:`SequenceSampler`.
    """

    def __init__(
        self,
        dataset: Dataset,
        seq_len: int,
        batch_size: int,
        task: int,
        relevant_fraction: float = 0.5,
        **kwargs,
    ):
        super().__init__(dataset, seq_len, batch_size, **kwargs)
        if not 0.0 <= relevant_fraction <= 1.0:
            raise ValueError(f"relevant_fraction must be in [0, 1], got {relevant_fraction}")
        self.task = int(task)
        self.relevant_fraction = float(relevant_fraction)
        self.n_relevant = round(relevant_fraction * batch_size)
        rel_eps, rel_starts = [], []
        for e in self.episodes[self.dataset.tasks[self.episodes] == self.task]:
            hit = np.asarray(self.dataset[int(e)].rewards[:, self.task]) != 0
            c = np.concatenate([[0], np.cumsum(hit)])
            n_win = len(hit) - self.seq_len + 1
            starts = np.nonzero(c[self.seq_len : self.seq_len + n_win] - c[:n_win] > 0)[0]
            rel_eps.append(np.full(len(starts), e, dtype=np.int64))
            rel_starts.append(starts.astype(np.int64))
        self._rel_eps = np.concatenate(rel_eps) if rel_eps else np.zeros(0, np.int64)
        self._rel_starts = np.concatenate(rel_starts) if rel_starts else np.zeros(0, np.int64)
        if self.n_relevant > 0 and len(self._rel_eps) == 0:
            raise ValueError(
                f"no window of {self.seq_len} frames in an episode of task {self.task} carries a non-zero "
                f"task reward; collect episodes of that task (lol-dreamer collect --task ...) or set relevant_fraction=0"
            )

    @property
    def num_relevant_windows(self) -> int:
        return len(self._rel_eps)

    def sample(self, step: int) -> dict[str, torch.Tensor]:
        rng = self.rng(step)
        if self.n_relevant:
            pick = rng.integers(0, len(self._rel_eps), size=self.n_relevant)
            rel_e, rel_s = self._rel_eps[pick], self._rel_starts[pick]
        else:
            rel_e = rel_s = np.zeros(0, np.int64)
        uni_e, uni_s = self._draw_uniform(rng, self.batch_size - self.n_relevant)
        out = self._gather(np.concatenate([rel_e, uni_e]), np.concatenate([rel_s, uni_s]))
        relevant = torch.zeros(self.batch_size, dtype=torch.bool)
        relevant[: self.n_relevant] = True
        out["relevant"] = relevant
        return out
