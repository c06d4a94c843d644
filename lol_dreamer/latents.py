"""Encode whole episodes with a trained tokenizer, batched across episodes, and store the latents.

Episodes are streamed frame by frame through the tokenizer's encoder stream (which equals encoding
the whole clip at once, with memory bounded by the attention window), ``batch_size`` episodes side
by side. ``lol-dreamer tokenize`` writes the result beside each episode's frames
(``latents.npy``, float16 ``[T, n_z, d_z]``) with the tokenizer's identity in the episode metadata.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


def _frames_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """``uint8 [b, H, W, 3]`` → ``float32 [b, 3, H, W]`` in [0, 1]."""
    return (
        torch.from_numpy(np.ascontiguousarray(frames))
        .to(device)
        .permute(0, 3, 1, 2)
        .float()
        .div_(255.0)
    )


def check_resolution(model: nn.Module, episodes: Sequence[Any]) -> None:
    """Raise a ValueError when an episode's frames are not the tokenizer's resolution."""
    res = model.cfg.res
    for ep in episodes:
        if ep.resolution != res:
            raise ValueError(
                f"episode {ep.name} has {ep.resolution}px frames but the tokenizer was trained at {res}px; "
                "tokenize data of the same resolution (collect/ingest with the matching --res) or train a "
                f"tokenizer at {ep.resolution}px"
            )


@torch.no_grad()
def encode_episodes(
    model: nn.Module,
    episodes: Sequence[Any],
    *,
    batch_size: int = 16,
    max_frames: int | None = None,
    device: str | torch.device = "cpu",
    reconstruct: bool = False,
    progress: bool = True,
    desc: str = "tokenize",
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Stream episodes through the tokenizer, ``batch_size`` at a time.

    Args:
        model: a tokenizer (``encoder_stream`` / ``decoder_stream``, ``cfg.n_z``, ``cfg.d_z``), in eval mode.
        episodes: episodes with ``.frames uint8 [T, H, W, 3]`` (e.g. a ``Dataset``'s items).
        batch_size: episodes encoded side by side.
        max_frames: encode only the first ``max_frames`` frames of each episode.
        device: where to run the model.
        reconstruct: also decode every latent back to a frame.
        progress: show a tqdm bar over frames.
        desc: the bar's label.

    Yields:
        ``(i, latents float32 [T, n_z, d_z], recon uint8 [T, H, W, 3] or None)`` for each episode
        position ``i`` (longest episodes first).
    """
    device = torch.device(device)
    cfg = model.cfg
    cap = max_frames if max_frames is not None else 1 << 62
    lengths = [min(len(ep), cap) for ep in episodes]
    order = sorted(range(len(episodes)), key=lambda i: -lengths[i])
    bar = tqdm(
        total=sum(lengths), desc=desc, unit="frame", disable=not progress, dynamic_ncols=True
    )
    try:
        for lo in range(0, len(order), batch_size):
            chunk = order[lo : lo + batch_size]
            lens = [lengths[i] for i in chunk]
            eps = [episodes[i] for i in chunk]
            b, t_max = len(chunk), max(lens)
            enc = model.encoder_stream(b)
            dec = model.decoder_stream(b) if reconstruct else None
            lat = np.zeros((b, t_max, cfg.n_z, cfg.d_z), np.float32)
            rec = None
            for t in range(t_max):
                # Rows whose episode has ended repeat its last frame; their outputs are dropped.
                frame = np.stack([ep.frames[min(t, n - 1)] for ep, n in zip(eps, lens)])
                z = enc.step(_frames_tensor(frame, device))  # b n_z d_z
                lat[:, t] = z.float().cpu().numpy()
                if dec is not None:
                    y = dec.step(z)  # b 3 H W in [0, 1]
                    y = (
                        (y.float() * 255.0)
                        .round_()
                        .clamp_(0, 255)
                        .to(torch.uint8)
                        .permute(0, 2, 3, 1)
                    )
                    if rec is None:
                        rec = np.zeros((b, t_max, *y.shape[1:]), np.uint8)
                    rec[:, t] = y.cpu().numpy()
                bar.update(sum(t < n for n in lens))
            for j, i in enumerate(chunk):
                yield i, lat[j, : lens[j]], (rec[j, : lens[j]] if rec is not None else None)
    finally:
        bar.close()


def tokenize_dataset(
    tokenizer_run: str | os.PathLike,
    data: str | os.PathLike,
    *,
    batch_size: int = 16,
    device: str = "auto",
    only_missing: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode every episode of a dataset with a trained tokenizer and store the latents beside its frames.

    Uses the run's published weights (``model.safetensors``, the EMA weights when the run used EMA).

    Args:
        tokenizer_run: a run folder written by ``lol-dreamer train tokenizer``.
        data: a dataset folder.
        batch_size: episodes encoded side by side.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``…
        only_missing: skip episodes that already hold latents from this exact tokenizer.
        progress: show a progress bar.

    Returns:
        ``{"episodes": n written, "skipped": n, "frames": n, "n_z", "d_z", "seconds"}``.
    """
    import time

    from lol_dreamer.checkpoint import load_model
    from lol_dreamer.data import open_dataset, write_latents
    from lol_dreamer.training.trainer import resolve_device
    from lol_dreamer.world_model_training import tokenizer_identity

    ident = tokenizer_identity(tokenizer_run)
    dev = resolve_device(device)
    model = load_model(tokenizer_run, device=dev)
    ds = open_dataset(data)
    if len(ds) == 0:
        raise ValueError(f"{data} holds no episodes; collect or ingest some first")
    meta = {
        "tokenizer_path": ident["path"],
        "tokenizer_sha256": ident["sha256"],
        "tokenizer_config": ident["model"],
    }
    episodes = [ds[i] for i in range(len(ds))]
    todo = [
        ep
        for ep in episodes
        if not (
            only_missing
            and ep.latents is not None
            and ep.meta.get("latents_meta", {}).get("tokenizer_sha256") == ident["sha256"]
        )
    ]
    check_resolution(model, todo)
    t0 = time.perf_counter()
    frames = 0
    for i, lat, _ in encode_episodes(
        model, todo, batch_size=batch_size, device=dev, progress=progress
    ):
        write_latents(data, todo[i].name, lat, meta)
        frames += len(lat)
    seconds = time.perf_counter() - t0
    return {
        "episodes": len(todo),
        "skipped": len(episodes) - len(todo),
        "frames": frames,
        "n_z": model.cfg.n_z,
        "d_z": model.cfg.d_z,
        "seconds": seconds,
    }


def run(args: argparse.Namespace) -> int:
    """``lol-dreamer tokenize``."""
    out = tokenize_dataset(
        args.tokenizer,
        args.data,
        batch_size=args.batch_size,
        device=args.device,
        only_missing=args.only_missing,
    )
    rate = out["frames"] / max(out["seconds"], 1e-9)
    print(
        f"Tokenized {out['episodes']} episodes ({out['frames']} frames, {rate:.0f} frames/s) of {args.data} "
        f"with {Path(args.tokenizer)}; skipped {out['skipped']} already up to date. Latents "
        f"(float16 [T, {out['n_z']}, {out['d_z']}]) are stored beside each episode's frames as latents.npy; "
        f"next: `lol-dreamer train dynamics --data {args.data} --tokenizer {args.tokenizer} --out RUN`."
    )
    return 0
