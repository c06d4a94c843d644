"""Turn open-loop rollouts into the SPEC §9 world-model report: a dict, a printed table, a plot.

The inputs are plain frame arrays, so the report is independent of how the rollouts were made
(:mod:`lol_dreamer.evaluation.world_model_eval` makes them with a world model; tests with fakes).

Dimension letters: ``r`` rollouts, ``h`` predicted frames, ``H, W`` pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lol_dreamer.evaluation.rollout_metrics import (
    Detector,
    coherent_horizon,
    detect_positions,
    horizon_table,
    position_errors,
    psnr_per_frame,
    ssim_per_frame,
    summarize_horizon,
)

DEFAULT_HORIZONS = (1, 4, 16, 64)


def _curve(values: np.ndarray) -> list[float]:
    """Per-frame mean over rollouts of finite entries, ``[h]`` (NaN where none is finite)."""
    out = []
    for col in values.T:
        col = col[np.isfinite(col)]
        out.append(float(col.mean()) if col.size else float("nan"))
    return out


def _finite_psnr(p: np.ndarray, cap: float = 100.0) -> np.ndarray:
    """PSNR with exact matches capped at ``cap`` dB, so means stay finite."""
    return np.minimum(p, cap)


def rollout_report(
    pred: np.ndarray,
    true: np.ndarray,
    last_context: np.ndarray,
    shuffled: np.ndarray,
    detect: Detector | None,
    horizons: tuple[int, ...] = DEFAULT_HORIZONS,
    pred_rewards: np.ndarray | None = None,
    true_rewards: np.ndarray | None = None,
    recon: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every SPEC §9 dynamics measure from open-loop rollouts.

    Args:
        pred: ``uint8 [r, h, H, W, 3]`` frames predicted with the true future actions.
        true: ``uint8 [r, h, H, W, 3]`` the true future frames.
        last_context: ``uint8 [r, H, W, 3]`` the last context frame (the copy-last-frame floor).
        shuffled: ``uint8 [r, h, H, W, 3]`` frames predicted with the future actions shuffled in time.
        detect: champion detector ``frame -> (x, y) | None``; None skips the position measures.
        horizons: 1-based horizons for the tables.
        pred_rewards, true_rewards: ``[r, h]`` reward-head predictions on dreamed frame f and the
            true task reward of the transition into that frame (the reward of future action f),
            or None when the world model has no heads.
        recon: ``uint8 [r, h, H, W, 3]`` the true future frames through the tokenizer (encode →
            decode), the ceiling any dream can reach; reported as the ``tokenizer`` run.
    Returns:
        A JSON-safe dict: ``psnr``/``ssim`` (model, copy_last, shuffled per horizon),
        ``position_error_px``, ``champion_lost_rate``, ``coherent_horizon`` (mean / median per run;
        ``per_rollout`` of the model, ``per_rollout_by_run`` and ``end_cause`` of every run),
        ``action_following`` (how much worse shuffled actions make the prediction), ``reward``
        (MAE per horizon, or None), ``curves`` (per-frame means for plotting) and sizes.
        PSNR of exactly equal frames counts as 100 dB.
    """
    if pred.shape != true.shape or shuffled.shape != true.shape:
        raise ValueError(
            f"pred {pred.shape}, shuffled {shuffled.shape} and true {true.shape} must match"
        )
    r, h = true.shape[:2]
    width = true.shape[-2]
    floor = np.broadcast_to(last_context[:, None], true.shape)
    runs = {"model": pred, "copy_last": floor, "shuffled": shuffled}
    if recon is not None:
        runs["tokenizer"] = recon
    psnr = {k: _finite_psnr(psnr_per_frame(v, true)) for k, v in runs.items()}
    ssim = {k: ssim_per_frame(v, true) for k, v in runs.items()}
    report: dict[str, Any] = {
        "n_rollouts": int(r),
        "rollout_frames": int(h),
        "horizons": [hz for hz in horizons if hz <= h],
        "psnr": {k: horizon_table(v, horizons) for k, v in psnr.items()},
        "ssim": {k: horizon_table(v, horizons) for k, v in ssim.items()},
        "curves": {
            "psnr": {k: _curve(v) for k, v in psnr.items()},
            "ssim": {k: _curve(v) for k, v in ssim.items()},
        },
    }
    follow: dict[str, Any] = {
        "psnr_drop_db": {
            hz: report["psnr"]["model"][hz] - report["psnr"]["shuffled"][hz]
            for hz in report["psnr"]["model"]
        },
    }
    if detect is not None:
        threshold = width / 16.0
        true_pos = detect_positions(true, detect)
        errs = {k: position_errors(detect_positions(v, detect), true_pos) for k, v in runs.items()}
        hor = {k: coherent_horizon(e, threshold) for k, e in errs.items()}
        report["threshold_px"] = threshold
        report["champion_visible_rate"] = float(np.mean(~np.isnan(true_pos).any(-1)))
        report["position_error_px"] = {k: horizon_table(e, horizons) for k, e in errs.items()}
        report["champion_lost_rate"] = {
            k: horizon_table(np.isinf(e).astype(float), horizons) for k, e in errs.items()
        }
        report["coherent_horizon"] = {k: summarize_horizon(v, h) for k, v in hor.items()}
        report["coherent_horizon"]["per_rollout"] = hor["model"].tolist()
        report["coherent_horizon"]["per_rollout_by_run"] = {k: v.tolist() for k, v in hor.items()}
        report["coherent_horizon"]["end_cause"] = {
            k: _end_causes(errs[k], v) for k, v in hor.items()
        }
        report["curves"]["position_error_px"] = {k: _curve(e) for k, e in errs.items()}
        follow["position_error_increase_px"] = {
            hz: report["position_error_px"]["shuffled"][hz]
            - report["position_error_px"]["model"][hz]
            for hz in report["position_error_px"]["model"]
        }
        follow["coherent_horizon_drop"] = (
            report["coherent_horizon"]["model"]["mean"]
            - report["coherent_horizon"]["shuffled"]["mean"]
        )
    report["action_following"] = follow
    if pred_rewards is not None and true_rewards is not None:
        err = np.abs(np.asarray(pred_rewards, np.float64) - np.asarray(true_rewards, np.float64))
        report["reward"] = {
            "mae": horizon_table(err, horizons),
            "mae_all": float(err.mean()),
            "zero_predictor_mae": float(np.abs(true_rewards).mean()),
        }
    else:
        report["reward"] = None
    return report


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


def _end_causes(errors: np.ndarray, horizons: np.ndarray) -> list[str]:
    """Why each rollout's coherence ended: ``"lost"`` (the champion was not detected in the
    prediction, or was detected where the true frame shows none), ``"drift"`` (detected, but more
    than the threshold away) or ``"censored"`` (coherent to the last frame)."""
    out = []
    for e, hz in zip(errors, horizons):
        if hz >= e.shape[-1]:
            out.append("censored")
        else:
            out.append("lost" if np.isinf(e[hz]) else "drift")
    return out


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of the report, one row per measure and columns per horizon."""
    hz = [str(h) for h in report["horizons"]]
    rows: list[tuple[str, list[str]]] = []
    for key, label, digits in (
        ("psnr", "PSNR dB", 2),
        ("ssim", "SSIM", 3),
        ("position_error_px", "pos err px", 1),
        ("champion_lost_rate", "champion lost", 2),
    ):
        if key not in report:
            continue
        for run in report[key]:
            rows.append((f"{label} [{run}]", [_fmt(report[key][run].get(h), digits) for h in hz]))
    if report.get("reward"):
        rows.append(("reward MAE", [_fmt(report["reward"]["mae"].get(h), 4) for h in hz]))
    head = f"{'measure':<28}" + "".join(f"{'h=' + h:>10}" for h in hz)
    lines = [head, "-" * len(head)]
    lines += [f"{name:<28}" + "".join(f"{v:>10}" for v in vals) for name, vals in rows]
    if "coherent_horizon" in report:
        ch = report["coherent_horizon"]
        lines.append(
            f"coherent horizon (frames, error ≤ {report['threshold_px']:.0f} px): model mean "
            f"{ch['model']['mean']:.1f} / median {ch['model']['median']:.1f} "
            f"(coherent to the end in {100 * ch['model']['censored_fraction']:.0f}% of "
            f"{report['n_rollouts']} rollouts of {report['rollout_frames']} frames); "
            f"copy-last {ch['copy_last']['mean']:.1f}; shuffled actions {ch['shuffled']['mean']:.1f}"
        )
        if "end_cause" in ch:
            ends = []
            for run, causes in ch["end_cause"].items():
                lost, drift = causes.count("lost"), causes.count("drift")
                ends.append(f"{run} {lost} lost / {drift} drifted")
            lines.append("rollouts ending before the last frame: " + "; ".join(ends))
    af = report["action_following"]
    drop = ", ".join(f"h={h}: {_fmt(v)}" for h, v in af["psnr_drop_db"].items())
    lines.append(f"action following, PSNR drop with shuffled actions (dB): {drop}")
    if "position_error_increase_px" in af:
        inc = ", ".join(f"h={h}: {_fmt(v, 1)}" for h, v in af["position_error_increase_px"].items())
        lines.append(f"action following, position error increase (px): {inc}")
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """PNG of PSNR, SSIM and position error over the horizon (model vs floor vs shuffled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lol_dreamer.io import atomic_write

    curves = report["curves"]
    panels = [("psnr", "PSNR (dB)"), ("ssim", "SSIM")]
    if "position_error_px" in curves:
        panels.append(("position_error_px", "champion position error (px)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    steps = np.arange(1, report["rollout_frames"] + 1)
    for ax, (key, label) in zip(np.atleast_1d(axes), panels):
        for run, style in (
            ("model", "-"),
            ("copy_last", "--"),
            ("shuffled", ":"),
            ("tokenizer", "-."),
        ):
            if run not in curves[key]:
                continue
            ax.plot(steps, curves[key][run], style, label=run.replace("_", " "))
        if key == "position_error_px":
            ax.axhline(report["threshold_px"], color="grey", lw=0.8, label="coherence threshold")
        ax.set_xscale("log")
        ax.set_xlabel("frames ahead")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path
