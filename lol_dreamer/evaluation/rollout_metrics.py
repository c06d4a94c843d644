"""Fidelity measures of open-loop world-model rollouts (SPEC §9), on plain arrays.

Everything here is model-free: it compares predicted and true frame sequences, so it can be tested
with a fake "model" that copies the truth or shuffles it.

Dimension letters: ``r`` rollouts, ``h`` horizon (predicted frames), ``H, W`` pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Detector = Callable[[np.ndarray], "tuple[float, float] | None"]


def psnr_per_frame(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each frame, peak 255.

    Args:
        pred, true: ``uint8 [..., H, W, 3]``.
    Returns:
        float64 ``[...]``; identical frames give ``inf``.
    """
    err = (pred.astype(np.float64) - true.astype(np.float64)) ** 2
    mse = err.mean(axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


def _box_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over ``size × size`` windows of the two axes ``[-3, -2]`` ('valid' positions)."""
    c = x.cumsum(axis=-3).cumsum(axis=-2)
    c = np.pad(c, [(0, 0)] * (c.ndim - 3) + [(1, 0), (1, 0), (0, 0)])
    s = (
        c[..., size:, size:, :]
        - c[..., :-size, size:, :]
        - c[..., size:, :-size, :]
        + c[..., :-size, :-size, :]
    )
    return s / (size * size)


def ssim_per_frame(pred: np.ndarray, true: np.ndarray, window: int = 7) -> np.ndarray:
    """Structural similarity of each frame (uniform window, per channel, averaged).

    Wang et al. 2004, eq. 13, with the usual constants ``C1 = (0.01·255)²``, ``C2 = (0.03·255)²``.

    Args:
        pred, true: ``uint8 [..., H, W, 3]``; ``H, W ≥ window``.
    Returns:
        float64 ``[...]`` in ``[-1, 1]``; identical frames give 1.
    """
    x, y = pred.astype(np.float64), true.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _box_mean(x, window), _box_mean(y, window)
    n = window * window
    cov_norm = n / (n - 1)  # unbiased (co)variances
    vx = cov_norm * (_box_mean(x * x, window) - mx * mx)
    vy = cov_norm * (_box_mean(y * y, window) - my * my)
    vxy = cov_norm * (_box_mean(x * y, window) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(axis=(-3, -2, -1))


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
