"""Make a training run folder a self-contained world model (docs/architecture.md, "Run folder").

Besides ``config.json`` and ``model.safetensors`` a world-model folder holds

- ``tokenizer/``: a copy of the tokenizer run (``config.json`` + ``model.safetensors``);
- ``starts.safetensors``: held-out start clips, ``latents`` fp16 ``[N, C, n_z, d_z]``,
  ``actions`` int64 ``[N, C, 9]``, ``tasks`` int64 ``[N]``;
- ``clips.safetensors``: a few held-out clips with their true frames, ``frames`` uint8
  ``[M, T, H, W, 3]``, ``latents`` fp16 ``[M, T, n_z, d_z]``, ``actions`` int64 ``[M, T, 9]``,
  ``rewards`` float32 ``[M, T, n_tasks]``, ``terminated`` bool ``[M, T]``, ``tasks`` int64 ``[M]``,

so dreaming, evaluation and the dream env need only the folder's path.

Dimension letters: ``N`` start clips, ``M`` clips, ``C`` context frames, ``T`` clip frames.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lol_dreamer.io import atomic_write

TOKENIZER_DIR = "tokenizer"
STARTS_FILE = "starts.safetensors"
CLIPS_FILE = "clips.safetensors"


def _windows(
    lengths: Sequence[int], length: int, n: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """``n`` (episode, start) pairs of windows of ``length`` frames, spread over the episodes.

    Episodes are visited round-robin in a random order so every usable episode contributes; start
    offsets are uniform within each episode. Episodes shorter than ``length`` are skipped.
    """
    usable = [i for i, t in enumerate(lengths) if t >= length]
    if not usable:
        return []
    order = rng.permutation(usable)
    out = []
    for j in range(n):
        ep = int(order[j % len(order)])
        out.append((ep, int(rng.integers(0, lengths[ep] - length + 1))))
    return out


def collect_starts(
    episodes: Sequence[Any], context: int, n: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Sample ``n`` start clips of ``context`` frames from tokenized (held-out) episodes.

    Args:
        episodes: episodes with ``.latents [T, n_z, d_z]``, ``.actions [T, 9]``, ``.task``.
        context: frames per start clip (C).
        n: number of start clips (N).
        seed: window sampling seed.
    Returns:
        ``{"latents": fp16 [N, C, n_z, d_z], "actions": int64 [N, C, 9], "tasks": int64 [N]}``.
    Raises:
        ValueError: no episode has ``context`` frames or latents.
    """
    rng = np.random.default_rng(seed)
    for ep in episodes:
        if ep.latents is None:
            raise ValueError(
                f"episode {ep.name} has no latents; run `lol-dreamer tokenize` on its dataset first"
            )
    wins = _windows([len(ep.actions) for ep in episodes], context, n, rng)
    if not wins:
        raise ValueError(
            f"no held-out episode has {context} frames for a start clip; collect longer episodes, "
            "hold out more of them (--held-out) or shorten --context"
        )
    lat = np.stack(
        [np.asarray(episodes[e].latents[s : s + context], dtype=np.float16) for e, s in wins]
    )
    act = np.stack(
        [np.asarray(episodes[e].actions[s : s + context], dtype=np.int64) for e, s in wins]
    )
    tasks = np.array([int(episodes[e].task) for e, _ in wins], dtype=np.int64)
    return {
        "latents": torch.from_numpy(lat),
        "actions": torch.from_numpy(act),
        "tasks": torch.from_numpy(tasks),
    }


def collect_clips(
    episodes: Sequence[Any], length: int, n: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Cut ``n`` clips of ``length`` frames (or of the shortest usable episode) with true frames.

    Args:
        episodes: held-out episodes with frames, latents, actions, rewards, terminated, task.
        length: frames per clip; shortened to the longest length every chosen episode has.
        n: number of clips (M).
        seed: sampling seed.
    Returns:
        The ``clips.safetensors`` tensors (see the module docstring).
    """
    rng = np.random.default_rng(seed + 1)
    lengths = [len(ep.actions) for ep in episodes]
    length = min(length, max(lengths))
    wins = sorted(set(_windows(lengths, length, n, rng)))
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("frames", "latents", "actions", "rewards", "terminated")
    }
    for e, s in wins:
        ep = episodes[e]
        out["frames"].append(np.asarray(ep.frames[s : s + length], dtype=np.uint8))
        out["latents"].append(np.asarray(ep.latents[s : s + length], dtype=np.float16))
        out["actions"].append(np.asarray(ep.actions[s : s + length], dtype=np.int64))
        out["rewards"].append(np.asarray(ep.rewards[s : s + length], dtype=np.float32))
        out["terminated"].append(np.asarray(ep.terminated[s : s + length], dtype=bool))
    tensors = {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}
    tensors["tasks"] = torch.tensor([int(episodes[e].task) for e, _ in wins], dtype=torch.int64)
    return tensors


def save_tensors(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a tensor dict atomically as safetensors."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing file gets an error that names what writes it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {path.parent} is not a complete world model (written by "
            "`lol-dreamer train dynamics` or `lol-dreamer train agent`)"
        )
    return load_file(str(path))


def copy_tokenizer(tokenizer_run: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Copy a tokenizer run's ``config.json`` and ``model.safetensors`` into ``out_dir/tokenizer``.

    A world-model folder given as ``tokenizer_run`` is accepted too (its ``tokenizer/`` is copied).

    Returns:
        The ``tokenizer/`` folder.
    """
    src = Path(tokenizer_run)
    if (src / TOKENIZER_DIR / "config.json").exists() and not (src / "model.safetensors").exists():
        src = src / TOKENIZER_DIR
    dst = Path(out_dir) / TOKENIZER_DIR
    for name in ("config.json", "model.safetensors"):
        if not (src / name).exists():
            raise FileNotFoundError(
                f"{src / name} not found: --tokenizer must be a tokenizer run folder (from `lol-dreamer train tokenizer`)"
            )
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        atomic_write(dst / name, lambda p, n=name: shutil.copyfile(src / n, p))
    return dst


def copy_world_model_assets(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``tokenizer/``, ``starts.safetensors`` and ``clips.safetensors`` from one world model to another."""
    src, dst = Path(src), Path(dst)
    copy_tokenizer(src / TOKENIZER_DIR, dst)
    for name in (STARTS_FILE, CLIPS_FILE):
        if not (src / name).exists():
            raise FileNotFoundError(
                f"{src / name} not found; {src} is not a complete world model (retrain it with `lol-dreamer train dynamics`)"
            )
        atomic_write(dst / name, lambda p, n=name: shutil.copyfile(src / n, p))
