"""Fidelity measures of open-loop world-model rollouts (SPEC §9), on plain arrays.

Everything here is model-free: it compares predicted and true frame sequences, so it can be tested
with a fake "model" that copies the truth or shuffles it.

Dimension letters: ``r`` rollouts, ``h`` horizon (predicted frames), ``H, W`` pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lol_dreamer.evaluation.metrics import psnr, ssim

Detector = Callable[[np.ndarray], "tuple[float, float] | None"]


def _chw(frames: np.ndarray) -> torch.Tensor:
    """``uint8 [..., H, W, 3]`` → float64 ``[..., 3, H, W]`` in [0, 255]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).double().movedim(-1, -3)


def _per_row(
    fn: Callable[[np.ndarray, np.ndarray], torch.Tensor], pred: np.ndarray, true: np.ndarray
) -> np.ndarray:
    """Apply a per-image metric one leading row at a time (bounded float64 memory)."""
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} differ in shape")
    if pred.ndim <= 4:
        return fn(pred, true).numpy()
    return np.stack([fn(p, t).numpy() for p, t in zip(pred, true)])


def psnr_per_frame(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each frame, peak 255 (:func:`lol_dreamer.evaluation.metrics.psnr`).

    Args:
        pred, true: ``uint8 [..., H, W, 3]``.
    Returns:
        float64 ``[...]``; identical frames give ``inf``.
    """
    return _per_row(lambda a, b: psnr(_chw(a), _chw(b), data_range=255.0), pred, true)


def ssim_per_frame(pred: np.ndarray, true: np.ndarray, window: int = 7) -> np.ndarray:
    """Structural similarity of each frame (:func:`lol_dreamer.evaluation.metrics.ssim`: Wang et al. 2004,
    eq. 13, uniform 7×7 window, per channel, averaged).

    Args:
        pred, true: ``uint8 [..., H, W, 3]``; ``H, W ≥ window``.
    Returns:
        float64 ``[...]`` in ``[-1, 1]``; identical frames give 1.
    """
    return _per_row(
        lambda a, b: ssim(_chw(a), _chw(b), data_range=255.0, window=window), pred, true
    )


def detect_positions(frames: np.ndarray, detect: Detector) -> np.ndarray:
    """Champion position of every frame.

    Args:
        frames: ``uint8 [..., H, W, 3]``.
        detect: ``frame -> (x, y) | None``.
    Returns:
        float64 ``[..., 2]``; NaN where the champion was not found.
    """
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.full((len(flat), 2), np.nan)
    for i, f in enumerate(flat):
        p = detect(f)
        if p is not None:
            out[i] = p
    return out.reshape(*frames.shape[:-3], 2)


def position_errors(pred_pos: np.ndarray, true_pos: np.ndarray) -> np.ndarray:
    """Euclidean champion position error per frame, with the not-detected cases made explicit.

    Args:
        pred_pos, true_pos: ``[..., 2]`` positions, NaN = not detected.
    Returns:
        float64 ``[...]``: the distance in pixels when both are detected; ``inf`` when the
        prediction lost (or invented) the champion; ``0`` when neither frame shows it (both agree
        the champion is off screen, e.g. dead).
    """
    pm = np.isnan(pred_pos).any(-1)
    tm = np.isnan(true_pos).any(-1)
    d = np.sqrt(((np.nan_to_num(pred_pos) - np.nan_to_num(true_pos)) ** 2).sum(-1))
    d = np.where(pm != tm, np.inf, d)
    return np.where(pm & tm, 0.0, d)


def coherent_horizon(errors: np.ndarray, threshold: float) -> np.ndarray:
    """Frames until the position error first exceeds ``threshold``.

    Args:
        errors: ``[r, h]`` per-frame errors of ``r`` rollouts (``inf`` = champion lost).
        threshold: pixels, e.g. ``width / 16``.
    Returns:
        int64 ``[r]``: the index of the first frame whose error exceeds the threshold, i.e. the
        number of coherent frames before it; ``h`` when no frame exceeds it (coherent throughout,
        a censored value).
    """
    bad = errors > threshold
    first = np.where(bad.any(-1), bad.argmax(-1), errors.shape[-1])
    return first.astype(np.int64)


def horizon_table(values: np.ndarray, horizons: tuple[int, ...]) -> dict[str, float]:
    """Mean of a per-frame measure at 1-based horizons, ignoring non-finite entries.

    Args:
        values: ``[r, h]``.
        horizons: e.g. ``(1, 4, 16, 64)``; horizons beyond ``h`` are left out.
    Returns:
        ``{"1": mean, "4": mean, ...}`` (NaN when no finite value exists at that horizon).
    """
    out: dict[str, float] = {}
    for hz in horizons:
        if hz > values.shape[-1]:
            continue
        col = values[..., hz - 1]
        col = col[np.isfinite(col)]
        out[str(hz)] = float(col.mean()) if col.size else float("nan")
    return out


def shuffle_actions(actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Permute each rollout's future actions in time (a derangement when possible).

    The permutation keeps the rollout's action statistics but breaks their timing, so a model that
    follows actions must get worse and one that ignores them does not change.

    Args:
        actions: ``int64 [r, h, 9]``.
    Returns:
        ``int64 [r, h, 9]``.
    """
    out = actions.copy()
    h = actions.shape[1]
    for i in range(len(actions)):
        perm = rng.permutation(h)
        if h > 1:
            for _ in range(16):  # prefer a permutation that moves every step
                if not np.any(perm == np.arange(h)):
                    break
                perm = rng.permutation(h)
        out[i] = actions[i, perm]
    return out


def summarize_horizon(horizons: np.ndarray, max_horizon: int) -> dict[str, float]:
    """Mean / median coherent horizon and the fraction of rollouts coherent to the end."""
    return {
        "mean": float(np.mean(horizons)),
        "median": float(np.median(horizons)),
        "censored_fraction": float(np.mean(horizons >= max_horizon)),
        "rollout_frames": int(max_horizon),
    }
