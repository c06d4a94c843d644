"""Shared fixture for the world-model training tests: a tiny tokenizer run and a tokenized dataset.

The tokenizer has random weights (the ``test`` preset at 16 px); the dataset is written with the
public data API and its latents with :func:`lol_dreamer.data.write_latents`, tagged with the
tokenizer's weights hash the way the training jobs check it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lol_dreamer.actions import ACTION_NVEC, TASK_INDEX

RES = 16


def make_tokenizer_run(path: str | Path, res: int = RES, seed: int = 0) -> Path:
    """Write a tokenizer run folder (``config.json`` kind ``tokenizer`` + ``model.safetensors``)."""
    from lol_dreamer.checkpoint import save_weights
    from lol_dreamer.io import atomic_write_json
    from lol_dreamer.models import build_tokenizer
    from lol_dreamer.models.tokenizer_config import TokenizerConfig

    torch.manual_seed(seed)
    path = Path(path)
    cfg = TokenizerConfig.preset("test", res=res).to_dict()
    tok = build_tokenizer(cfg)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        path / "config.json", {"kind": "tokenizer", "model": cfg, "train": {}, "data": None}
    )
    save_weights(path / "model.safetensors", tok, cfg)
    return path


def episode_arrays(length: int, seed: int, res: int = RES) -> dict[str, np.ndarray]:
    """A champion-coloured square driven by random actions, farm rewards every 5th step, terminal at the end."""
    from lol_dreamer.envs.lane.render import PLAYER_COLOUR

    rng = np.random.default_rng(seed)
    actions = np.stack([rng.integers(0, k, length) for k in ACTION_NVEC], -1).astype(np.int64)
    frames = np.full((length, res, res, 3), 30, np.uint8)
    x, y = rng.integers(2, res - 6, 2)
    for t in range(length):
        frames[t, y : y + 4, x : x + 4] = PLAYER_COLOUR
        mv = actions[t, 0]
        if mv < 18:
            a = np.deg2rad(20 * mv)
            x = int(np.clip(x + round(np.cos(a)), 0, res - 4))
            y = int(np.clip(y - round(np.sin(a)), 0, res - 4))
    rewards = np.zeros((length, 3), np.float32)
    rewards[::5, TASK_INDEX["farm"]] = 1.0
    terminated = np.zeros(length, bool)
    terminated[-1] = True
    return {"frames": frames, "actions": actions, "rewards": rewards, "terminated": terminated}


def make_dataset(
    root: str | Path, tokenizer_run: str | Path, n_episodes: int = 3, length: int = 24
) -> Path:
    """Write ``n_episodes`` farm episodes and their latents from ``tokenizer_run``."""
    from lol_dreamer.checkpoint import load_model
    from lol_dreamer.data import open_dataset, write_episode, write_latents
    from lol_dreamer.world_model_training import file_sha256

    root = Path(root)
    for i in range(n_episodes):
        write_episode(
            root, task=TASK_INDEX["farm"], source="test", **episode_arrays(length, seed=i)
        )
    tok = load_model(tokenizer_run)
    meta = {
        "tokenizer": str(tokenizer_run),
        "sha256": file_sha256(Path(tokenizer_run) / "model.safetensors"),
    }
    ds = open_dataset(root)
    for i in range(len(ds)):
        ep = ds[i]
        with torch.no_grad():
            x = torch.from_numpy(np.array(ep.frames)).permute(0, 3, 1, 2).float()[None] / 255.0
            z = tok.encode(x)[0].numpy()
        write_latents(root, ep.name, z, meta=meta)
    return root


def make_trained_world_model(
    root: str | Path,
    *,
    n_starts: int = 3,
    clip_frames: int = 12,
    batch_size: int = 1,
    extra: tuple[str, ...] = ("--quiet",),
) -> tuple[Path, Path, Path]:
    """A tokenizer run, 3 tokenized farm episodes of 20 frames and a one-step ``train dynamics`` run.

    Args:
        root: folder to write ``tok/``, ``data/`` and ``wm/`` into.
        n_starts: ``--n-starts`` of the world model.
        clip_frames: ``--clip-frames`` of the world model.
        batch_size: ``--batch-size`` of the one step.
        extra: further ``train dynamics`` flags.

    Returns:
        ``(tokenizer_run, dataset, world_model)`` folders.
    """
    from lol_dreamer.cli import main

    root = Path(root)
    tok = make_tokenizer_run(root / "tok")
    data = make_dataset(root / "data", tok, n_episodes=3, length=20)
    wm = root / "wm"
    argv = ["train", "dynamics", "--data", str(data), "--tokenizer", str(tok), "--out", str(wm)]
    argv += ["--preset", "test", "--steps", "1", "--batch-size", str(batch_size)]
    argv += ["--eval-batches", "1", "--n-starts", str(n_starts), "--clip-frames", str(clip_frames)]
    assert main([*argv, *extra]) == 0
    return tok, data, wm
