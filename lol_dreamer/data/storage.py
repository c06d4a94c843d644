"""Episode storage: one folder of ``.npy`` files per episode plus a JSON index (SPEC §4).

Layout (documented in ``docs/data_format.md``)::

    DIR/index.json                       format name + version, one entry per episode
    DIR/episodes/ep_000000/meta.json     task, fps, resolution, source, state fields, file shapes/sizes
    DIR/episodes/ep_000000/frames.npy    uint8   [T, H, W, 3]   observation at step t
    DIR/episodes/ep_000000/actions.npy   int64   [T, 9]         action taken after seeing frames[t]
    DIR/episodes/ep_000000/labeled.npy   bool    [T]            actions[t] is a real label
    DIR/episodes/ep_000000/rewards.npy   float32 [T, 3]         reward of transition t, order TASKS
    DIR/episodes/ep_000000/terminated.npy bool   [T]            episode ended after actions[t]
    DIR/episodes/ep_000000/state.npy     float32 [T, S]         optional true game state
    DIR/episodes/ep_000000/latents.npy   float16 [T, n_z, d_z]  optional, written by ``tokenize``

Every write is atomic: an episode is written into a hidden temporary folder beside its final
name, each file is fsynced, and the folder is moved into place with ``os.replace``; the index is
rewritten atomically under an advisory file lock, so concurrent writers never corrupt it.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lol_dreamer.actions import ACTION_DIM, N_MOVE, STAND, TASKS
from lol_dreamer.io import atomic_write, atomic_write_json, read_json

FORMAT_NAME = "lol-dreamer-episodes"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
EPISODES_DIR = "episodes"
META_FILE = "meta.json"
EPISODE_RE = re.compile(r"^ep_(\d{6,})$")
DEFAULT_FPS = 20.0

# name -> (dtype, trailing shape or None when free); the leading dim is always T.
FIELDS: dict[str, tuple[np.dtype, tuple[int, ...] | None]] = {
    "frames": (np.dtype(np.uint8), None),
    "actions": (np.dtype(np.int64), (ACTION_DIM,)),
    "labeled": (np.dtype(np.bool_), ()),
    "rewards": (np.dtype(np.float32), (len(TASKS),)),
    "terminated": (np.dtype(np.bool_), ()),
    "state": (np.dtype(np.float32), None),
    "latents": (np.dtype(np.float16), None),
}
REQUIRED = ("frames", "actions", "labeled", "rewards", "terminated")


class DataError(ValueError):
    """A dataset file is missing, truncated or damaged; the message names the file and the fix."""


# --------------------------------------------------------------------------------------------
# Small helpers: names, locks, fsync, checksums
# --------------------------------------------------------------------------------------------


def episode_name(number: int) -> str:
    """``7 -> "ep_000007"``."""
    return f"ep_{number:06d}"


def episode_number(name: str) -> int:
    m = EPISODE_RE.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not an episode name (expected ep_NNNNNN)")
    return int(m.group(1))


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``root/.lock`` (serialises index updates across processes)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crc32(path: Path, chunk: int = 1 << 22) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def _file_record(path: Path, arr_shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
    return {
        "shape": list(arr_shape),
        "dtype": np.dtype(dtype).str,
        "bytes": path.stat().st_size,
        "crc32": _crc32(path),
    }


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------------


def _empty_index() -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "split_rule": "held_out if int(sha256(f'{seed}:{name}')[:8 bytes]) / 2**64 < held_out (see docs/data_format.md)",
        "episodes": [],
    }


def index_entry(meta: dict[str, Any]) -> dict[str, Any]:
    """The index row of an episode, built from its ``meta.json``."""
    return {
        "name": meta["name"],
        "length": int(meta["length"]),
        "task": int(meta["task"]),
        "resolution": int(meta["resolution"]),
        "source": meta.get("source", "unknown"),
        "labeled_frames": int(meta.get("labeled_frames", 0)),
        "has_state": "state.npy" in meta["files"],
        "has_latents": "latents.npy" in meta["files"],
    }


def read_index(root: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``root/index.json``; errors say how to repair the dataset."""
    root = Path(root)
    path = root / INDEX_FILE
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset folder {root} does not exist; create one with `lol-dreamer collect --out {root}`"
        )
    if not path.exists():
        if (root / EPISODES_DIR).is_dir() and any((root / EPISODES_DIR).iterdir()):
            raise DataError(
                f"{path} is missing but {root / EPISODES_DIR} holds episodes; rebuild the index with "
                f"`python -c \"from lol_dreamer.data import rebuild_index; rebuild_index('{root}')\"`"
            )
        raise DataError(
            f"{root} is not a lol-dreamer dataset (no {INDEX_FILE}); create one with `lol-dreamer collect --out {root}`"
        )
    try:
        index = read_json(path)
    except ValueError as e:
        raise DataError(
            f"{path} is damaged ({e}); rebuild it from the episode folders with "
            f"`python -c \"from lol_dreamer.data import rebuild_index; rebuild_index('{root}')\"`"
        ) from e
    if (
        not isinstance(index, dict)
        or index.get("format") != FORMAT_NAME
        or not isinstance(index.get("episodes"), list)
    ):
        raise DataError(
            f"{path} is not a {FORMAT_NAME} index; rebuild it with "
            f"`python -c \"from lol_dreamer.data import rebuild_index; rebuild_index('{root}')\"`"
        )
    if index.get("version", 0) > FORMAT_VERSION:
        raise DataError(
            f"{path} has format version {index['version']} but this lol-dreamer reads up to {FORMAT_VERSION}; upgrade lol-dreamer"
        )
    return index


def add_to_index(root: str | os.PathLike, entries: list[dict[str, Any]]) -> None:
    """Add (or replace, by name) episode rows in the index, atomically and under the lock."""
    root = Path(root)
    with _locked(root):
        path = root / INDEX_FILE
        index = read_index(root) if path.exists() else _empty_index()
        rows = {e["name"]: e for e in index["episodes"]}
        for e in entries:
            rows[e["name"]] = e
        index["episodes"] = [rows[k] for k in sorted(rows, key=episode_number)]
        atomic_write_json(path, index)


def rebuild_index(root: str | os.PathLike) -> int:
    """Rewrite ``root/index.json`` from the episode folders' ``meta.json`` files.

    Episodes whose ``meta.json`` is unreadable are left out (and reported in the return count's
    complement). Returns the number of episodes indexed.
    """
    root = Path(root)
    with _locked(root):
        entries = []
        for d in sorted((root / EPISODES_DIR).glob("ep_*")):
            if not (d.is_dir() and EPISODE_RE.match(d.name)):
                continue
            try:
                entries.append(index_entry(read_json(d / META_FILE)))
            except (OSError, ValueError, KeyError):
                continue
        index = _empty_index()
        index["episodes"] = entries
        atomic_write_json(root / INDEX_FILE, index)
    return len(entries)


def _next_number(root: Path) -> int:
    """Next free episode number: past every final, temporary or indexed episode folder."""
    numbers = [-1]
    ep_dir = root / EPISODES_DIR
    if ep_dir.is_dir():
        for d in ep_dir.iterdir():
            m = re.match(r"^\.?ep_(\d{6,})", d.name)
            if m:
                numbers.append(int(m.group(1)))
    if (root / INDEX_FILE).exists():
        numbers += [episode_number(e["name"]) for e in read_index(root)["episodes"]]
    return max(numbers) + 1


def reserve_names(root: str | os.PathLike, n: int) -> list[str]:
    """Reserve ``n`` consecutive fresh episode names (safe across processes).

    A reservation is an empty hidden folder ``episodes/.ep_NNNNNN.reserved`` that the writer
    replaces; it keeps concurrent writers from picking the same name.
    """
    root = Path(root)
    (root / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
    with _locked(root):
        start = _next_number(root)
        names = [episode_name(start + i) for i in range(n)]
        for name in names:
            (root / EPISODES_DIR / f".{name}.reserved").mkdir()
    return names


def _release(root: Path, name: str) -> None:
    res = root / EPISODES_DIR / f".{name}.reserved"
    if res.is_dir():
        shutil.rmtree(res, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


def _check(name: str, arr: np.ndarray, length: int, trailing: tuple[int, ...] | None) -> np.ndarray:
    dtype, _ = FIELDS[name]
    arr = np.asarray(arr)
    if arr.ndim == 0 or arr.shape[0] != length:
        raise ValueError(f"{name} must have {length} rows (one per frame), got shape {arr.shape}")
    if trailing is not None and arr.shape[1:] != trailing:
        want = ", ".join(["T", *map(str, trailing)])
        raise ValueError(f"{name} must have shape [{want}], got {arr.shape}")
    if dtype == np.bool_ and arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (0/1), got values outside 0/1")
    return arr.astype(dtype, copy=False)


def write_episode(
    root: str | os.PathLike,
    *,
    frames: np.ndarray,
    actions: np.ndarray | None,
    labeled: np.ndarray | None = None,
    rewards: np.ndarray | None = None,
    task: int = 0,
    terminated: np.ndarray | None = None,
    state: np.ndarray | None = None,
    state_fields: list[str] | tuple[str, ...] | None = None,
    meta: dict[str, Any] | None = None,
    fps: float = DEFAULT_FPS,
    source: str = "unknown",
    name: str | None = None,
    update_index: bool = True,
) -> str:
    """Write one episode atomically and (by default) add it to the index.

    Args:
        root: dataset folder (created if needed).
        frames: ``uint8 [T, H, W, 3]``, square (H == W).
        actions: ``int64 [T, 9]``, or None for an unlabeled episode (stored as stand / no keys).
        labeled: ``bool [T]``; default all True when ``actions`` is given, else all False.
        rewards: ``float32 [T, 3]`` in the order of ``lol_dreamer.actions.TASKS``; default zeros.
        task: task id (index into TASKS).
        terminated: ``bool [T]``; default all False (the episode was truncated).
        state: optional ``float32 [T, S]`` true game state; needs ``state_fields`` (S names).
        meta: free-form JSON-safe metadata stored under ``meta.json["metadata"]``.
        fps: frames per second of the recording.
        source: where the episode came from (``"lanesim"``, ``"video"``, ...).
        name: the episode name (from :func:`reserve_names`); default: the next free name.
        update_index: add the episode to ``index.json``. Parallel workers pass False and let
            one parent process call :func:`add_to_index` with the returned names' entries.

    Returns:
        The episode name, e.g. ``"ep_000003"``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h != w:
        raise ValueError(
            f"frames must be square (H == W), got {h}x{w}; centre-crop them first (lol_dreamer.data.ingest.center_crop_resize)"
        )
    if t == 0:
        raise ValueError("an episode needs at least one frame")
    if not 0 <= int(task) < len(TASKS):
        raise ValueError(
            f"task must be an id in 0..{len(TASKS) - 1} ({', '.join(TASKS)}), got {task}"
        )
    if actions is None:
        actions = np.tile(np.array([STAND] + [0] * (ACTION_DIM - 1), dtype=np.int64), (t, 1))
        labeled = np.zeros(t, bool) if labeled is None else labeled
    actions = _check("actions", actions, t, (ACTION_DIM,))
    out_of_range = (
        (actions[:, 0] < 0)
        | (actions[:, 0] >= N_MOVE)
        | ((actions[:, 1:] < 0) | (actions[:, 1:] > 1)).any(1)
    )
    if out_of_range.any():
        bad = int(np.argmax(out_of_range))
        raise ValueError(
            f"actions[{bad}] = {actions[bad].tolist()} is out of range: movement must be 0..18 and keys 0/1"
        )
    arrays: dict[str, np.ndarray] = {
        "frames": frames,
        "actions": actions,
        "labeled": _check("labeled", np.ones(t, bool) if labeled is None else labeled, t, ()),
        "rewards": _check(
            "rewards",
            np.zeros((t, len(TASKS)), np.float32) if rewards is None else rewards,
            t,
            (len(TASKS),),
        ),
        "terminated": _check(
            "terminated", np.zeros(t, bool) if terminated is None else terminated, t, ()
        ),
    }
    if state is not None:
        state = np.asarray(state)
        if state.ndim != 2:
            raise ValueError(f"state must be float32 [T, S], got shape {state.shape}")
        if state_fields is None or len(state_fields) != state.shape[1]:
            raise ValueError(
                f"state has {state.shape[1]} columns; pass state_fields with one name per column"
            )
        arrays["state"] = _check("state", state, t, None)

    root = Path(root)
    ep_dir = root / EPISODES_DIR
    ep_dir.mkdir(parents=True, exist_ok=True)
    if name is None:
        name = reserve_names(root, 1)[0]
    episode_number(name)
    final = ep_dir / name
    if final.exists():
        raise FileExistsError(
            f"episode {final} already exists; pick a fresh name with reserve_names()"
        )
    tmp = ep_dir / f".{name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        files = {}
        for key, arr in arrays.items():
            p = tmp / f"{key}.npy"
            _save_npy(p, arr)
            files[p.name] = _file_record(p, arr.shape, arr.dtype)
        record = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": name,
            "length": t,
            "task": int(task),
            "task_name": TASKS[int(task)],
            "fps": float(fps),
            "resolution": h,
            "source": source,
            "labeled_frames": int(arrays["labeled"].sum()),
            "state_fields": list(state_fields) if state is not None else None,
            "files": files,
            "metadata": meta or {},
        }
        atomic_write_json(tmp / META_FILE, record)
        _fsync_path(tmp)
        _release(root, name)
        os.replace(tmp, final)
        _fsync_path(ep_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _release(root, name)
        raise
    if update_index:
        add_to_index(root, [index_entry(record)])
    return name


def write_latents(
    root: str | os.PathLike,
    episode_name: str,
    latents: np.ndarray,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Store pre-tokenized latents ``float16 [T, n_z, d_z]`` beside an episode's frames.

    Args:
        root: dataset folder.
        episode_name: e.g. ``"ep_000003"``.
        latents: ``[T, n_z, d_z]`` (any float dtype; stored as float16), one row per frame.
        meta: the tokenizer's identity (run folder, config hash, step, ...), stored in
            ``meta.json["latents_meta"]``.

    Returns:
        The path of ``latents.npy``.
    """
    root = Path(root)
    ep = root / EPISODES_DIR / episode_name
    record = _read_meta(ep)
    latents = np.asarray(latents)
    if latents.ndim != 3 or latents.shape[0] != record["length"]:
        raise ValueError(
            f"latents must be [T={record['length']}, n_z, d_z] for {episode_name}, got {latents.shape}"
        )
    latents = latents.astype(np.float16)
    path = ep / "latents.npy"
    atomic_write(path, lambda p: _save_npy(p, latents))
    record["files"]["latents.npy"] = _file_record(path, latents.shape, latents.dtype)
    record["latents_meta"] = meta or {}
    atomic_write_json(ep / META_FILE, record)
    add_to_index(root, [index_entry(record)])
    return path


def _read_meta(ep: Path) -> dict[str, Any]:
    path = ep / META_FILE
    try:
        record = read_json(path)
    except FileNotFoundError as e:
        raise DataError(
            f"{path} is missing; the episode folder {ep} is incomplete — delete it and rebuild_index()"
        ) from e
    except ValueError as e:
        raise DataError(
            f"{path} is damaged ({e}); delete the episode folder {ep} and rebuild_index()"
        ) from e
    if not isinstance(record, dict) or "files" not in record or "length" not in record:
        raise DataError(
            f"{path} lacks the episode fields (length, files); delete {ep} and rebuild_index()"
        )
    return record
