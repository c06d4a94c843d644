"""``lol-dreamer eval tokenizer``: held-out reconstruction quality and what the latents know (SPEC §9).

- PSNR and SSIM of reconstructions (encode → decode, streamed frame by frame) of held-out episodes;
- linear-probe R² of the player's HP, gold and level from the flattened latents: a ridge
  regression fit on training episodes and scored on held-out episodes;
- a PNG grid of held-out originals (top) over their reconstructions (bottom).

The held-out split is the one the tokenizer was trained with (read from its ``config.json``).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

PROBE_FIELDS = ("hp", "gold", "level")


def _state_columns(episode: Any, fields: tuple[str, ...]) -> dict[str, int]:
    names = episode.state_fields or []
    return {f: names.index(f) for f in fields if f in names}


def recon_grid(originals: np.ndarray, recons: np.ndarray, gap: int = 2) -> np.ndarray:
    """Tile ``[n, H, W, 3]`` originals over their reconstructions into one ``uint8`` image.

    Frames smaller than 64 px are enlarged (nearest neighbour) so the grid stays legible.
    """
    scale = max(1, 64 // originals.shape[1])
    if scale > 1:
        originals = originals.repeat(scale, axis=1).repeat(scale, axis=2)
        recons = recons.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, _ = originals.shape
    grid = np.full((2 * h + 3 * gap, n * w + (n + 1) * gap, 3), 255, np.uint8)
    for i in range(n):
        x = gap + i * (w + gap)
        grid[gap : gap + h, x : x + w] = originals[i]
        grid[2 * gap + h : 2 * gap + 2 * h, x : x + w] = recons[i]
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an ``uint8 [H, W, 3]`` image as PNG atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.image import imsave

    from lol_dreamer.io import atomic_write

    return atomic_write(path, lambda p: imsave(p, image, format="png"))


def probe_context(
    names: list[str], train_y: np.ndarray, held_y: np.ndarray, r2: np.ndarray
) -> dict[str, dict[str, float | None]]:
    """What a probe's R² means on this held-out set.

    R² divides by the held-out targets' own variance; with few held-out episodes a field can barely
    vary there (a level that stays at 5 or 6), so a small error gives a large negative R². This
    reports, per field, the held-out and training spread, the probe's RMSE in the field's units
    (``std_held · √(1 - R²)``) and the R² of always predicting the training mean (the floor).

    Args:
        names: field names, one per column.
        train_y: ``[n, k]`` probe-training targets; held_y: ``[m, k]`` held-out targets.
        r2: ``[k]`` the probe's held-out R².
    Returns:
        ``{"held_out_std", "train_std", "rmse", "train_mean_r2"}``, each ``{field: value}``.
    """
    out: dict[str, dict[str, float | None]] = {
        "held_out_std": {}, "train_std": {}, "rmse": {}, "train_mean_r2": {},
    }  # fmt: skip
    for j, n in enumerate(names):
        hs, ts = float(held_y[:, j].std()), float(train_y[:, j].std())
        out["held_out_std"][n], out["train_std"][n] = hs, ts
        ok = math.isfinite(float(r2[j])) and hs > 0
        out["rmse"][n] = hs * math.sqrt(max(0.0, 1.0 - float(r2[j]))) if ok else None
        if hs > 0:
            mse = float(((held_y[:, j] - train_y[:, j].mean()) ** 2).mean())
            out["train_mean_r2"][n] = 1.0 - mse / hs**2
        else:  # a constant held-out field: R² is undefined
            out["train_mean_r2"][n] = None
    return out


def evaluate_tokenizer(
    tokenizer_run: str | os.PathLike,
    data: str | os.PathLike,
    *,
    held_out: float | None = None,
    split_seed: int | None = None,
    max_episodes: int = 32,
    max_frames: int | None = 256,
    batch_size: int = 16,
    grid_frames: int = 8,
    device: str = "auto",
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a trained tokenizer on held-out episodes and write ``tokenizer_eval.json`` + a PNG grid.

    Args:
        tokenizer_run: a run folder from ``lol-dreamer train tokenizer`` (its published weights are used).
        data: a dataset folder.
        held_out, split_seed: the episode split; default: the ones the tokenizer was trained with.
        max_episodes: at most this many episodes per side (held-out, probe-training).
        max_frames: at most this many frames per episode, from its start; 0 or None = whole
            episodes (the probe's training rows are then a random subset of all of them).
        batch_size: episodes streamed side by side.
        grid_frames: frames in the PNG grid.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``…
        out_dir: where to write (default ``RUN/eval``).
        progress: show progress bars.

    Returns:
        The report (also written as JSON): ``psnr``, ``ssim`` (means over held-out frames, with
        ``*_std``), ``probe`` (R² per field, or None when the data has no game state), paths.
    """
    from lol_dreamer.checkpoint import load_model, load_run_config
    from lol_dreamer.data import open_dataset
    from lol_dreamer.evaluation.metrics import linear_probe_r2, psnr, ssim
    from lol_dreamer.io import atomic_write_json
    from lol_dreamer.latents import check_resolution, encode_episodes
    from lol_dreamer.training.trainer import resolve_device

    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be ≥ 0 (0 = whole episodes), got {max_frames}")
    max_frames = max_frames or None
    run = Path(tokenizer_run)
    cfg = load_run_config(run)
    if cfg["kind"] != "tokenizer":
        raise ValueError(
            f"{run} is a {cfg['kind']!r} run; pass a folder written by `lol-dreamer train tokenizer`"
        )
    trained_on = cfg.get("data") or {}
    held_out = trained_on.get("held_out", 0.1) if held_out is None else held_out
    split_seed = trained_on.get("split_seed", 0) if split_seed is None else split_seed
    dev = resolve_device(device)
    model = load_model(run, device=dev)
    ds = open_dataset(data)
    if len(ds) < 2:
        raise ValueError(
            f"{data} holds {len(ds)} episode(s); evaluation needs held-out and training episodes"
        )
    train_ds, held_ds = ds.split(held_out=held_out, seed=split_seed)
    held_eps = [held_ds[i] for i in range(min(len(held_ds), max_episodes))]
    train_eps = [train_ds[i] for i in range(min(len(train_ds), max_episodes))]
    check_resolution(model, held_eps + train_eps)
    t0 = time.perf_counter()

    # Held-out: reconstruct, score every frame, keep latents for the probe and frames for the grid.
    ps, ss, held_lat = [], [], {}
    grid_o, grid_r = [], []
    use_ssim = model.cfg.res >= 7
    for i, lat, rec in encode_episodes(
        model, held_eps, batch_size=batch_size, max_frames=max_frames, device=dev, reconstruct=True,
        progress=progress, desc="held-out",
    ):  # fmt: skip
        orig = np.array(held_eps[i].frames[: len(lat)])
        o = torch.from_numpy(orig).permute(0, 3, 1, 2).double() / 255.0
        r = torch.from_numpy(rec).permute(0, 3, 1, 2).double() / 255.0
        ps.append(psnr(r, o).clamp(max=100.0).numpy())
        if use_ssim:
            ss.append(ssim(r, o).numpy())
        held_lat[i] = lat
        per = max(1, math.ceil(grid_frames / len(held_eps)))
        for t in np.linspace(0, len(lat) - 1, num=min(per, len(lat))).round().astype(int):
            if len(grid_o) < grid_frames:
                grid_o.append(orig[t])
                grid_r.append(rec[t])
    ps_all = np.concatenate(ps)
    ss_all = np.concatenate(ss) if ss else np.array([np.nan])

    # Linear probe: latents of training episodes → state; scored on the held-out latents.
    probe: dict[str, float] | None = None
    probe_info: dict[str, Any] = {}
    cols = _state_columns(held_eps[0], PROBE_FIELDS) if held_eps[0].state is not None else {}
    if cols:
        train_lat = {}
        for i, lat, _ in encode_episodes(
            model, train_eps, batch_size=batch_size, max_frames=max_frames, device=dev, progress=progress,
            desc="probe (train)",
        ):  # fmt: skip
            train_lat[i] = lat
        names = list(cols)

        def rows(eps, lats):
            xs, ys, gs = [], [], []
            for i, lat in sorted(lats.items()):
                c = _state_columns(eps[i], PROBE_FIELDS)
                if eps[i].state is None or any(n not in c for n in names):
                    continue
                xs.append(lat.reshape(len(lat), -1))
                ys.append(np.asarray(eps[i].state[: len(lat)])[:, [c[n] for n in names]])
                gs.append(np.full(len(lat), i))
            return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)

        tx, ty, tg = rows(train_eps, train_lat)
        hx, hy, _ = rows(held_eps, held_lat)
        res = linear_probe_r2(tx, ty, hx, hy, train_groups=tg)
        probe = {n: (None if math.isnan(v) else float(v)) for n, v in zip(names, res.r2)}
        probe_info = {"alpha": res.alpha, "train_rows": res.n_train, "test_rows": res.n_test}
        probe_info.update(probe_context(names, ty, hy, res.r2))
        missing = [f for f in PROBE_FIELDS if f not in cols]
        if missing:
            probe_info["missing_fields"] = missing

    out_dir = Path(out_dir) if out_dir is not None else run / "eval"
    png = save_png(out_dir / "tokenizer_recon.png", recon_grid(np.stack(grid_o), np.stack(grid_r)))
    report = {
        "tokenizer": str(run.resolve()),
        "data": str(Path(data).resolve()),
        "held_out": held_out,
        "split_seed": split_seed,
        "held_out_episodes": len(held_eps),
        "held_out_frames": len(ps_all),
        "max_frames": max_frames,  # per episode, from its start; None = whole episodes
        "psnr": float(ps_all.mean()),
        "psnr_std": float(ps_all.std()),
        "ssim": float(np.nanmean(ss_all)) if ss else None,
        "ssim_std": float(np.nanstd(ss_all)) if ss else None,
        "probe": probe,
        "probe_info": probe_info,
        "png": str(png),
        "seconds": time.perf_counter() - t0,
    }
    report["json"] = str(atomic_write_json(out_dir / "tokenizer_eval.json", report))
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a two-column text table."""

    def f(v: Any, digits: int) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    lines = [
        f"{'metric':<22}{'held-out value':>16}",
        f"{'PSNR (dB)':<22}{f(report['psnr'], 2):>16}",
        f"{'SSIM':<22}{f(report['ssim'], 4):>16}",
    ]
    if report["probe"] is None:
        lines.append(f"{'linear-probe R²':<22}{'no game state':>16}")
    else:
        ctx = report.get("probe_info", {})
        for name, r2 in report["probe"].items():
            lines.append(f"{'linear-probe R² ' + name:<22}{f(r2, 3):>16}")
            if name in ctx.get("rmse", {}):
                lines.append(
                    f"{'  RMSE / held-out std':<22}{f(ctx['rmse'][name], 3):>8} /"
                    f"{f(ctx['held_out_std'][name], 3):>7}  (train-mean R² "
                    f"{f(ctx['train_mean_r2'][name], 2)})"
                )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``lol-dreamer eval tokenizer``."""
    report = evaluate_tokenizer(
        args.tokenizer, args.data, held_out=args.held_out, split_seed=args.split_seed,
        max_episodes=args.max_episodes, max_frames=args.max_frames, batch_size=args.batch_size,
        device=args.device, out_dir=args.out,
    )  # fmt: skip
    print(format_table(report))
    print(
        f"Evaluated {args.tokenizer} on {report['held_out_episodes']} held-out episodes "
        f"({report['held_out_frames']} frames) of {args.data} in {report['seconds']:.1f} s; the report is "
        f"{report['json']} and originals (top) vs reconstructions (bottom) are in {report['png']}."
    )
    return 0
