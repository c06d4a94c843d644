"""``lol-dreamer dream``: roll a world model open loop from a stored held-out clip and film it.

The world model's ``clips.safetensors`` holds held-out clips with their true frames. The first
``C`` frames of a clip (C = the model's context) are the context; the dream then follows the clip's
own actions, and each dreamed frame is shown left of the true frame it should match (integer
upscaled), written as mp4 through PyAV (or gif when the suffix says so).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def dream_clip(
    wm, clip: int, frames: int, k: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """Dream ``frames`` frames from stored clip ``clip`` with its true actions.

    Args:
        wm: a :class:`lol_dreamer.world_model.WorldModel` with clips.
        clip: clip index.
        frames: dreamed frames F (at most the clip length minus the context).
        k: denoising steps per frame (default: the world model's).
        seed: noise seed.
    Returns:
        ``(dream uint8 [F, H, W, 3], truth uint8 [F, H, W, 3], dreamed frames per second)``; the
        rate counts dynamics and decoding.
    """
    from lol_dreamer.evaluation.world_model_eval import decode_latents, open_loop

    clips = wm.clips
    t = int(clips["frames"].shape[1])
    c = min(wm.context_length, t - 1)
    lat = clips["latents"][clip : clip + 1].float()
    act = clips["actions"][clip : clip + 1].long()
    task = wm.config.get("task_id")
    task_t = torch.tensor([int(clips["tasks"][clip]) if task is None else int(task)])
    t0 = time.perf_counter()
    z, _ = open_loop(wm, lat[:, :c], act[:, :c], act[:, c - 1 : c - 1 + frames], task_t, k, seed)
    video = decode_latents(wm.tokenizer, torch.cat((lat[:, :c].to(z.device), z), 1))[0, c:]
    fps = frames / max(time.perf_counter() - t0, 1e-9)
    truth = clips["frames"][clip, c : c + frames].numpy()
    return video, truth, fps


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lol-dreamer dream`` (flags: :mod:`lol_dreamer.commands.dream`)."""
    from lol_dreamer.training.trainer import resolve_device
    from lol_dreamer.videoio import side_by_side, upscale, write_video
    from lol_dreamer.world_model import load_world_model

    if args.frames < 1:
        raise ValueError(f"--frames must be at least 1, got {args.frames}")
    wm = load_world_model(args.world_model, device=resolve_device(args.device))
    if not wm.clips or "frames" not in wm.clips:
        raise ValueError(
            f"{args.world_model} stores no clips with true frames (clips.safetensors); retrain it with "
            "`lol-dreamer train dynamics`, which stores held-out clips"
        )
    n_clips, t = wm.clips["frames"].shape[:2]
    clip = (
        args.clip
        if args.clip is not None
        else int(np.random.default_rng(args.seed).integers(n_clips))
    )
    if not 0 <= clip < n_clips:
        raise ValueError(f"--clip must be in 0..{n_clips - 1}, got {clip}")
    c = min(wm.context_length, t - 1)
    frames = args.frames
    if frames > t - c:
        print(
            f"clip {clip} has {t - c} frames after its {c}-frame context; dreaming {t - c} instead of {frames}"
        )
        frames = t - c
    dream, truth, fps = dream_clip(wm, clip, frames, args.k, args.seed)
    scale = args.scale or max(1, 256 // wm.res)
    video = upscale(side_by_side(dream, truth), scale)
    out = write_video(args.out, video, fps=wm.fps)
    print(
        f"Dreamed {frames} frames (K={args.k or wm.k}) from held-out clip {clip} after a {c}-frame context at "
        f"{fps:.1f} frames/s; wrote {out} (left: dream, right: ground truth, {scale}× upscaled, {wm.fps} FPS)."
    )
    return 0
