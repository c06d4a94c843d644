"""Image and representation metrics: PSNR, SSIM and the linear-probe R² of SPEC §9.

Images are ``float [..., C, H, W]`` in ``[0, data_range]``; every function returns one value per
image so callers can average however they like. SSIM follows Wang et al. 2004 with scikit-image's
defaults (7 × 7 uniform window, sample covariances, ``K1 = 0.01``, ``K2 = 0.03``), the same definition
as :func:`lol_dreamer.evaluation.rollout_metrics.ssim_per_frame`, so tokenizer and dynamics numbers
compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio ``10 · log10(L² / MSE)`` in dB of each image.

    Args:
        pred, target: ``[..., C, H, W]`` with values in ``[0, data_range]``.
        data_range: the peak value L.

    Returns:
        ``[...]`` float64; identical images give ``inf``.

    Example:
        >>> float(psnr(torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.1)))  # MSE 0.01 → 20 dB
        20.0
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )
    mse = (pred.double() - target.double()).pow(2).mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, window: int = 7) -> Tensor:
    """Structural similarity of each image (Wang et al. 2004, eq. 13), averaged over channels.

    Local means, variances and the covariance use a ``window × window`` uniform filter over the
    valid region, with sample (``n − 1``) normalisation; ``C1 = (0.01 L)²``, ``C2 = (0.03 L)²``.

    Args:
        pred, target: ``[..., C, H, W]`` in ``[0, data_range]``, with ``H, W ≥ window``.
        data_range: the peak value L.
        window: side of the averaging window (odd).

    Returns:
        ``[...]`` float64 in ``[-1, 1]``; identical images give 1.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )
    h, w = pred.shape[-2:]
    if h < window or w < window:
        raise ValueError(
            f"images of {h}×{w} are smaller than the {window}×{window} SSIM window; pass a smaller window"
        )
    lead = pred.shape[:-3]
    x = pred.double().reshape(-1, *pred.shape[-3:])  # n c H W
    y = target.double().reshape(-1, *target.shape[-3:])
    mean = lambda a: F.avg_pool2d(a, window, stride=1)  # noqa: E731
    mx, my = mean(x), mean(y)
    n = window * window
    cov = n / (n - 1)
    vx = cov * (mean(x * x) - mx * mx)
    vy = cov * (mean(y * y) - my * my)
    vxy = cov * (mean(x * y) - mx * my)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(-3, -2, -1)).reshape(lead)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination ``1 − SS_res / SS_tot`` per column.

    Args:
        y_true, y_pred: ``[n, k]`` (or ``[n]``).

    Returns:
        ``[k]`` (or a scalar array); NaN for a column whose true values are constant.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    ss_res = ((y_true - y_pred) ** 2).sum(axis=0)
    ss_tot = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


class _Ridge:
    """Ridge regression for every penalty of a grid from one eigendecomposition.

    Uses the primal Gram matrix ``XᵀX`` when features ≤ samples, else the kernel ``XXᵀ``.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x_mean, self.y_mean = x.mean(0), y.mean(0)
        self.x_std = x.std(0)
        self.x_std[self.x_std < 1e-8] = 1.0
        xs = (x - self.x_mean) / self.x_std
        yc = y - self.y_mean
        self.xs = xs
        self.primal = xs.shape[1] <= xs.shape[0]
        gram = xs.T @ xs if self.primal else xs @ xs.T
        self.evals, self.vecs = np.linalg.eigh(gram)
        self.evals = np.clip(self.evals, 0.0, None)
        self.proj = self.vecs.T @ (xs.T @ yc if self.primal else yc)
        self.scale = max(float(self.evals.mean()), 1e-12)

    def predict(self, x: np.ndarray, alpha: float) -> np.ndarray:
        xs = (x - self.x_mean) / self.x_std
        inv = 1.0 / (self.evals + alpha * self.scale)
        coef = self.vecs @ (self.proj * inv[:, None])
        pred = xs @ coef if self.primal else xs @ (self.xs.T @ coef)
        return pred + self.y_mean


@dataclass
class ProbeResult:
    """Linear-probe outcome.

    Attributes:
        r2: ``[k]`` held-out R² per target (NaN where the held-out target is constant).
        alpha: the chosen ridge penalty (relative to the mean Gram eigenvalue).
        n_train, n_test: rows used.
    """

    r2: np.ndarray
    alpha: float
    n_train: int
    n_test: int


def linear_probe_r2(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    train_groups: np.ndarray | None = None,
    alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
    max_train: int = 3000,
    seed: int = 0,
) -> ProbeResult:
    """Ridge regression from features to targets, fit on training rows, R² on held-out rows.

    The penalty is picked on a validation part of the training rows (whole groups, e.g. episodes,
    when ``train_groups`` is given; otherwise the last 20 %), then the probe is refit on all
    training rows. Features are standardised with training statistics.

    Args:
        train_x: ``[n, d]`` features (e.g. flattened latents of training episodes).
        train_y: ``[n, k]`` targets (e.g. HP, gold, level).
        test_x: ``[m, d]`` held-out features.
        test_y: ``[m, k]`` held-out targets.
        train_groups: ``[n]`` group id of each training row, for the validation split.
        alphas: penalties to try, relative to the mean eigenvalue of the Gram matrix.
        max_train: at most this many training rows (random subset) to bound the cost.
        seed: seed of that subset.

    Returns:
        A :class:`ProbeResult`.

    Example:
        >>> x = np.random.randn(200, 5); w = np.random.randn(5, 1)
        >>> linear_probe_r2(x[:150], x[:150] @ w, x[150:], x[150:] @ w).r2  # ≈ [1.]
    """
    train_x = np.asarray(train_x, np.float64).reshape(len(train_x), -1)
    test_x = np.asarray(test_x, np.float64).reshape(len(test_x), -1)
    train_y = np.asarray(train_y, np.float64).reshape(len(train_y), -1)
    test_y = np.asarray(test_y, np.float64).reshape(len(test_y), -1)
    if len(train_x) < 4 or len(test_x) < 2:
        raise ValueError(
            f"a linear probe needs ≥ 4 training and ≥ 2 held-out rows, got {len(train_x)} and {len(test_x)}"
        )
    groups = np.asarray(train_groups) if train_groups is not None else None
    if len(train_x) > max_train:
        keep = np.sort(np.random.default_rng(seed).choice(len(train_x), max_train, replace=False))
        train_x, train_y = train_x[keep], train_y[keep]
        groups = groups[keep] if groups is not None else None
    if groups is not None and len(np.unique(groups)) >= 3:
        uniq = np.unique(groups)
        val_groups = uniq[
            np.random.default_rng(seed).permutation(len(uniq))[: max(1, len(uniq) // 5)]
        ]
        val = np.isin(groups, val_groups)
    else:
        val = np.arange(len(train_x)) >= int(0.8 * len(train_x))
    best = alphas[0]
    if len(alphas) > 1 and val.sum() >= 2 and (~val).sum() >= 2:
        fit = _Ridge(train_x[~val], train_y[~val])
        scores = []
        for a in alphas:
            r2 = r2_score(train_y[val], fit.predict(train_x[val], a))
            scores.append(np.nanmean(r2) if np.isfinite(r2).any() else -np.inf)
        best = alphas[int(np.argmax(scores))]
    probe = _Ridge(train_x, train_y)
    return ProbeResult(
        r2_score(test_y, probe.predict(test_x, best)), float(best), len(train_x), len(test_x)
    )
