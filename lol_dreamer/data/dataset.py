"""Reading episode datasets: :func:`open_dataset` → :class:`Dataset` of lazily loaded :class:`Episode`.

Arrays are memory-mapped (``np.load(mmap_mode="r")``) on first access, so opening a dataset of
any size costs one JSON read, and a sampler touches only the windows it draws. Damage is reported
per episode: a truncated or corrupted file raises :class:`DataError` naming that file when its
episode is accessed, while every other episode stays readable.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from lol_dreamer.actions import TASKS
from lol_dreamer.data.storage import (
    EPISODES_DIR,
    FIELDS,
    META_FILE,
    REQUIRED,
    DataError,
    _crc32,
    _read_meta,
    read_index,
)


class Episode:
    """One stored episode; every array is a read-only memory map loaded on first access.

    Attributes:
        frames: ``uint8 [T, H, W, 3]``.
        actions: ``int64 [T, 9]``.
        labeled: ``bool [T]``.
        rewards: ``float32 [T, 3]`` (order ``TASKS``).
        terminated: ``bool [T]``.
        state: ``float32 [T, S]`` or None; column names in ``state_fields``.
        latents: ``float16 [T, n_z, d_z]`` or None (written by ``lol-dreamer tokenize``).
        task: task id; ``meta``: the episode's ``meta.json``; ``name``: e.g. ``"ep_000003"``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta: dict[str, Any] = _read_meta(self.path)
        self.name: str = self.meta.get("name", self.path.name)
        self.task: int = int(self.meta["task"])
        self.state_fields: list[str] | None = self.meta.get("state_fields")
        self._cache: dict[str, np.ndarray] = {}
        for key in REQUIRED:
            if f"{key}.npy" not in self.meta["files"]:
                raise DataError(
                    f"{self.path / META_FILE} lists no {key}.npy; the episode is incomplete — delete {self.path} and rebuild_index()"
                )
        for fname, rec in self.meta["files"].items():
            self._check_size(fname, rec)

    def __getstate__(self) -> dict[str, Any]:
        # Pickle (e.g. into DataLoader workers) without the memory maps; they reopen lazily.
        return {**self.__dict__, "_cache": {}}

    def _check_size(self, fname: str, rec: dict[str, Any]) -> None:
        p = self.path / fname
        if not p.exists():
            raise DataError(
                f"{p} is missing; delete the episode folder {self.path} (or restore the file) and rebuild_index()"
            )
        size = p.stat().st_size
        if size != rec["bytes"]:
            raise DataError(
                f"{p} is truncated or damaged: {size} bytes on disk, {rec['bytes']} expected; "
                f"delete the episode folder {self.path} (or recollect it) and rebuild_index()"
            )

    def _load(self, key: str) -> np.ndarray | None:
        if key in self._cache:
            return self._cache[key]
        fname = f"{key}.npy"
        rec = self.meta["files"].get(fname)
        if rec is None:
            return None
        p = self.path / fname
        self._check_size(fname, rec)
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(
                f"{p} is damaged and cannot be read ({e}); delete the episode folder {self.path} and rebuild_index()"
            ) from e
        expected_dtype = FIELDS[key][0]
        if (
            tuple(arr.shape) != tuple(rec["shape"])
            or arr.dtype != expected_dtype
            or arr.shape[0] != len(self)
        ):
            raise DataError(
                f"{p} is damaged: holds {arr.dtype} {tuple(arr.shape)}, meta.json expects "
                f"{expected_dtype} {tuple(rec['shape'])}; delete the episode folder {self.path} and rebuild_index()"
            )
        self._cache[key] = arr
        return arr

    def __len__(self) -> int:
        return int(self.meta["length"])

    def __repr__(self) -> str:
        return f"Episode({self.name!r}, T={len(self)}, task={TASKS[self.task]!r}, res={self.resolution})"

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def frames(self) -> np.ndarray:
        return self._load("frames")

    @property
    def actions(self) -> np.ndarray:
        return self._load("actions")

    @property
    def labeled(self) -> np.ndarray:
        return self._load("labeled")

    @property
    def rewards(self) -> np.ndarray:
        return self._load("rewards")

    @property
    def terminated(self) -> np.ndarray:
        return self._load("terminated")

    @property
    def state(self) -> np.ndarray | None:
        return self._load("state")

    @property
    def latents(self) -> np.ndarray | None:
        return self._load("latents")

    def field(self, key: str) -> np.ndarray | None:
        """The array of a field by name (``"frames"``, ``"actions"``, ...)."""
        if key not in FIELDS:
            raise KeyError(f"unknown episode field {key!r}; fields are {', '.join(FIELDS)}")
        return self._load(key)

    def verify(self) -> None:
        """Read every file in full and compare its CRC-32 with ``meta.json`` (raises DataError)."""
        for fname, rec in self.meta["files"].items():
            self._check_size(fname, rec)
            crc = _crc32(self.path / fname)
            if "crc32" in rec and crc != rec["crc32"]:
                raise DataError(
                    f"{self.path / fname} is corrupted (checksum mismatch); delete the episode folder {self.path} and rebuild_index()"
                )
            self._load(fname[: -len(".npy")])


def split_key(name: str, seed: int) -> float:
    """The split coordinate of an episode in ``[0, 1)``: first 8 bytes of ``sha256(f"{seed}:{name}")`` / 2**64."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class Dataset(Sequence):
    """A sequence of episodes (``len``, indexing → :class:`Episode`), opened from an index.

    Episode-level facts (``lengths``, ``tasks``, ``names``) come from the index without touching
    episode files; episodes themselves are opened (and cached) on first access.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        entries: list[dict[str, Any]],
        cache: dict[str, Episode] | None = None,
    ):
        self.root = Path(root)
        self.entries = list(entries)
        self._episodes: dict[str, Episode] = {} if cache is None else cache

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_episodes": {}}

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, i: int) -> Episode: ...
    @overload
    def __getitem__(self, i: slice) -> Dataset: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.subset(range(len(self))[i])
        entry = self.entries[i]
        name = entry["name"]
        ep = self._episodes.get(name)
        if ep is None:
            ep = Episode(self.root / EPISODES_DIR / name)
            self._episodes[name] = ep
        return ep

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, episodes={len(self)}, frames={self.total_frames})"

    @property
    def names(self) -> list[str]:
        return [e["name"] for e in self.entries]

    @property
    def lengths(self) -> np.ndarray:
        """``int64 [N]`` episode lengths, from the index."""
        return np.array([e["length"] for e in self.entries], dtype=np.int64)

    @property
    def tasks(self) -> np.ndarray:
        """``int64 [N]`` task ids, from the index."""
        return np.array([e["task"] for e in self.entries], dtype=np.int64)

    @property
    def total_frames(self) -> int:
        return int(self.lengths.sum())

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """A dataset of the given episode positions (shares the open-episode cache)."""
        return Dataset(self.root, [self.entries[int(i)] for i in indices], self._episodes)

    def split(self, held_out: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Split by episode into ``(train, held_out)``, deterministically.

        Rule: an episode is held out when ``split_key(name, seed) < held_out``. An episode's side
        depends only on its own name and the seed, so appending episodes never moves an old one
        across the split. With ``0 < held_out < 1`` and at least two episodes, both sides are kept
        non-empty (the lowest-key episode is held out, the highest-key one is kept for training).

        Args:
            held_out: fraction of episodes to hold out, in ``[0, 1]``.
            seed: split seed.

        Returns:
            ``(train, held_out)`` datasets; together they hold every episode exactly once.
        """
        if not 0.0 <= held_out <= 1.0:
            raise ValueError(f"held_out must be a fraction in [0, 1], got {held_out}")
        keys = np.array([split_key(n, seed) for n in self.names])
        mask = keys < held_out
        if 0.0 < held_out < 1.0 and len(self) >= 2:
            if not mask.any():
                mask[int(np.argmin(keys))] = True
            if mask.all():
                mask[int(np.argmax(keys))] = False
        idx = np.arange(len(self))
        return self.subset(idx[~mask]), self.subset(idx[mask])

    def verify(self) -> list[tuple[str, str]]:
        """Check every episode in full; returns ``[(name, error), ...]`` for the damaged ones."""
        bad = []
        for i, name in enumerate(self.names):
            try:
                self[i].verify()
            except DataError as e:
                bad.append((name, str(e)))
        return bad


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Open a dataset folder written by ``lol-dreamer collect`` / ``ingest`` / :func:`write_episode`.

    Example:
        >>> ds = open_dataset("data/lane")            # doctest: +SKIP
        >>> ep = ds[0]; ep.frames.shape                # (T, H, W, 3), memory-mapped
        >>> train, held = ds.split(held_out=0.1, seed=0)

    Raises:
        FileNotFoundError: the folder does not exist.
        DataError: the index is missing or damaged (the message says how to rebuild it).
    """
    index = read_index(path)
    return Dataset(path, index["episodes"])
