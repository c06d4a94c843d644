"""``imagined_vs_real.png``: a phase-3 run's imagined return beside its return in the real game.

Left panel: ``imagined_return`` of every ``metrics.jsonl`` row (faint) and its smoothed curve
(exponential moving average with bias correction). Right panel: ``real/return`` at each real
evaluation with its 95 % CI (``real/return_ci95``) as error bars, and the prior's real return
(the ``step 0`` row: the BC policy) as a horizontal reference. The two returns have different
scales (H imagined steps versus whole real episodes), hence two panels on one step axis.

Example:
    >>> plot_imagined_vs_real("runs/pmpo")          # doctest: +SKIP
    PosixPath('runs/pmpo/imagined_vs_real.png')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def smooth(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average (TensorBoard-style), same length as ``values``.

    Example:
        >>> smooth(np.array([1.0, 1.0, 1.0])).tolist()
        [1.0, 1.0, 1.0]
    """
    out = np.empty(len(values))
    acc = 0.0
    for i, v in enumerate(np.asarray(values, dtype=np.float64)):
        acc = weight * acc + (1.0 - weight) * v
        out[i] = acc / (1.0 - weight ** (i + 1))
    return out


def curves(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The series the plot draws, from ``metrics.jsonl`` rows.

    Returns:
        ``imagined_step``, ``imagined`` [n]; ``real_step``, ``real``, ``real_ci95`` [m] (ci 0 where
        a row has none).
    """
    im = [(r["step"], r["imagined_return"]) for r in rows if _num(r.get("imagined_return"))]
    re = [
        (r["step"], r["real/return"], r.get("real/return_ci95") or 0.0)
        for r in rows
        if _num(r.get("real/return"))
    ]
    im_a = np.array(im, dtype=np.float64).reshape(-1, 2)
    re_a = np.array(re, dtype=np.float64).reshape(-1, 3)
    return {
        "imagined_step": im_a[:, 0], "imagined": im_a[:, 1],
        "real_step": re_a[:, 0], "real": re_a[:, 1], "real_ci95": re_a[:, 2],
    }  # fmt: skip


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and np.isfinite(v)


def plot_imagined_vs_real(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, weight: float = 0.9
) -> Path:
    """Write the imagined-versus-real figure of a phase-3 run folder.

    Args:
        run_dir: the ``lol-dreamer train imagine`` folder (reads its ``metrics.jsonl``).
        out: PNG path (default ``run_dir/imagined_vs_real.png``).
        weight: smoothing weight of the imagined curve (0 = none).
    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lol_dreamer.io import atomic_write
    from lol_dreamer.training.run_log import read_metrics

    run = Path(run_dir)
    c = curves(read_metrics(run))
    fig, (ax_i, ax_r) = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    if len(c["imagined"]):
        ax_i.plot(
            c["imagined_step"], c["imagined"], color="tab:blue", alpha=0.25, lw=1, label="per step"
        )
        ax_i.plot(c["imagined_step"], smooth(c["imagined"], weight), color="tab:blue",
                  label=f"smoothed (EMA {weight})")  # fmt: skip
        ax_i.legend(loc="best", fontsize=8)
    ax_i.set(title="imagined return (dream, H steps)", xlabel="optimiser step", ylabel="return")
    if len(c["real"]):
        ax_r.errorbar(c["real_step"], c["real"], yerr=c["real_ci95"], color="tab:red", marker="o",
                      capsize=3, label="policy in LaneSim (95% CI)")  # fmt: skip
        prior = c["real"][c["real_step"] == 0]
        if len(prior):
            ax_r.axhline(prior[0], color="gray", ls="--", lw=1, label="BC prior (step 0)")
        ax_r.legend(loc="best", fontsize=8)
    else:
        ax_r.text(0.5, 0.5, "no real evaluation\n(--real-eval-every 0)", ha="center",
                  va="center", transform=ax_r.transAxes)  # fmt: skip
    ax_r.set(title="real return (LoLLane-v0 episodes)", xlabel="optimiser step")
    fig.suptitle(f"{run.name}: imagined vs real return")
    fig.tight_layout()
    path = Path(out) if out is not None else run / "imagined_vs_real.png"
    try:
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path
