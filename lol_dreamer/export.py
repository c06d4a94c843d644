"""Export a finished pipeline's final agent world model as the bundled default model (SPEC §8).

``lol-dreamer pipeline --out RUN --export-default [DIR]`` copies ``RUN/pmpo`` (phase 3; ``RUN/bc``
when phase 3 was not run) into the layout :func:`lol_dreamer.load_world_model` reads, by default
``lol_dreamer/assets/default/`` so ``gym.make("LoLDream-v0")`` works offline on a fresh install:

| file | what |
|---|---|
| ``config.json`` | the run's config (paths made relative: the folder is self-contained) |
| ``model.safetensors`` | dynamics with agent tokens + policy / reward / continue (+ value) heads |
| ``tokenizer/`` | ``config.json`` + ``model.safetensors`` |
| ``starts.safetensors`` | held-out start clips as fp16 latents |
| ``clips.safetensors`` | held-out clips with true frames, trimmed to fit the size budget |
| ``MODEL_CARD.md`` | data, steps, wall time, hardware, every measured SPEC §9 metric, the command |

Optimiser ``state/``, ``metrics.jsonl`` and evaluation files are not copied. The total must stay
within ``max_mb`` (25 MB); the export refuses, naming the sizes, when it does not.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lol_dreamer.io import atomic_write, atomic_write_json, read_json

MAX_MB = 25.0
WEIGHT_FILES = ("model.safetensors", "starts.safetensors")


def default_dir() -> Path:
    """The package's bundled-model folder, ``lol_dreamer/assets/default``."""
    from lol_dreamer.world_model import DEFAULT_DIR

    return DEFAULT_DIR


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _trim_clips(src: Path, dst: Path, budget: int) -> dict[str, Any]:
    """Write as many whole held-out clips (frames shortened if needed) as fit in ``budget`` bytes."""
    import torch

    from lol_dreamer.world_model_export import load_tensors, save_tensors

    if not src.exists() or budget <= 0:
        return {"clips": 0, "frames": 0}
    clips = load_tensors(src)
    n, t = clips["frames"].shape[:2]
    per_frame = sum(v[0, 0].numel() * v.element_size() for k, v in clips.items() if v.ndim >= 2)
    fit_frames = max(0, budget // max(per_frame, 1))
    keep_t = min(t, fit_frames)
    keep_n = min(n, fit_frames // max(keep_t, 1)) if keep_t else 0
    if keep_n == 0 or keep_t < 2:
        return {"clips": 0, "frames": 0}
    out = {
        k: (v[:keep_n, :keep_t] if v.ndim >= 2 else v[:keep_n]).contiguous()
        for k, v in clips.items()
    }
    save_tensors(dst, {k: torch.as_tensor(v) for k, v in out.items()})
    return {"clips": int(keep_n), "frames": int(keep_t)}


def _relative_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Drop machine-specific absolute paths of the exported run's config (provenance stays in the card)."""
    cfg = dict(cfg)
    for key in ("parent",):
        if isinstance(cfg.get(key), str):
            cfg[key] = Path(cfg[key]).name
    for key in ("data", "tokenizer"):
        if isinstance(cfg.get(key), dict) and "path" in cfg[key]:
            cfg[key] = {**cfg[key], "path": Path(str(cfg[key]["path"])).name}
    if isinstance(cfg.get("prior"), dict):
        cfg["prior"] = {**cfg["prior"], "run": Path(str(cfg["prior"].get("run", ""))).name}
    cfg["exported_default"] = True
    return cfg


def export_default(
    run: str | os.PathLike,
    dest: str | os.PathLike | None = None,
    max_mb: float = MAX_MB,
    source: str | None = None,
) -> Path:
    """Copy a pipeline's final agent world model into the bundled-model layout with a model card.

    Args:
        run: the pipeline folder (with ``pipeline.json``).
        dest: destination folder (default ``lol_dreamer/assets/default``); replaced atomically.
        max_mb: refuse when the export would exceed this many MB (2**20 bytes).
        source: the subfolder to export (default ``pmpo``, else ``bc``).
    Returns:
        The destination folder.
    Raises:
        FileNotFoundError: no finished agent world model in ``run``.
        ValueError: the export exceeds ``max_mb`` (the message lists the file sizes).
    """
    from lol_dreamer.model_card import model_card

    run = Path(run)
    dest = Path(dest) if dest else default_dir()
    record = read_json(run / "pipeline.json")
    done = {k for k, v in record["stages"].items() if v.get("status") == "done"}
    name = source or ("pmpo" if "pmpo" in done else "bc")
    if name not in done or not (run / name / "model.safetensors").exists():
        raise FileNotFoundError(
            f"{run / name} is not a finished stage of the pipeline in {run}; run "
            f"`lol-dreamer pipeline --out {run}` until phase 2 (bc) or 3 (pmpo) is done, then export"
        )
    src = run / name
    budget = int(max_mb * 2**20)
    fixed = [src / f for f in WEIGHT_FILES] + [src / "tokenizer" / "model.safetensors"]
    fixed_bytes = sum(p.stat().st_size for p in fixed if p.exists())
    if fixed_bytes > budget:
        sizes = ", ".join(
            f"{p.relative_to(src)} {p.stat().st_size / 2**20:.1f} MB" for p in fixed if p.exists()
        )
        raise ValueError(
            f"exporting {src} needs {fixed_bytes / 2**20:.1f} MB ({sizes}), over the {max_mb:g} MB limit "
            "of the bundled default model; train smaller presets (--preset nano) or store fewer start "
            "clips (train dynamics --n-starts)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        (tmp / "tokenizer").mkdir()
        for rel in ("model.safetensors", "starts.safetensors", "tokenizer/model.safetensors",
                    "tokenizer/config.json"):  # fmt: skip
            shutil.copyfile(src / rel, tmp / rel)
        cfg = _relative_config(read_json(src / "config.json"))
        held = (cfg.get("data") or {}).get("held_out_episodes") or _held_out_episodes(run / "bc")
        if held and isinstance(cfg.get("data"), dict):
            # so `eval world-model` on the bundled model picks the episodes the model never saw
            cfg["data"] = {**cfg["data"], "held_out_episodes": held}
        atomic_write_json(tmp / "config.json", cfg)
        card_reserve = 64 * 1024
        clips = _trim_clips(src / "clips.safetensors", tmp / "clips.safetensors",
                            budget - folder_bytes(tmp) - card_reserve)  # fmt: skip
        total = folder_bytes(tmp)
        text = model_card(record, run, name, cfg, clips, total)
        atomic_write(tmp / "MODEL_CARD.md", lambda p: p.write_text(text))
        total = folder_bytes(tmp)
        if total > budget:
            raise ValueError(
                f"the export of {src} is {total / 2**20:.1f} MB, over the {max_mb:g} MB limit; "
                "train smaller presets or store fewer start clips"
            )
        _check_loads(tmp)
        for q in [tmp, *tmp.rglob("*")]:  # temp files are private (0600); a package asset is not
            q.chmod(0o755 if q.is_dir() else 0o644)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"Exported {src} as a default model: {dest} ({total / 2**20:.2f} MB: tokenizer, dynamics, heads, "
        f"{_n_starts(dest)} start clips, {clips['clips']} clips of {clips['frames']} frames, MODEL_CARD.md). "
        "lol_dreamer.load_world_model(None) and gym.make('LoLDream-v0') load it when it is the package's "
        "lol_dreamer/assets/default."
    )
    return dest


def _held_out_episodes(folder: Path) -> list[str]:
    """The episodes a run (here the exported run's phase-2 parent) held out from training."""
    path = folder / "config.json"
    held = (read_json(path).get("data") or {}).get("held_out_episodes") if path.exists() else None
    return list(held or [])


def _n_starts(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(folder / "starts.safetensors"), "pt") as f:
        return int(f.get_slice("latents").get_shape()[0])


def _check_loads(folder: Path) -> None:
    """The exported folder must load as a world model with heads (fail before replacing anything)."""
    from lol_dreamer.world_model import load_world_model

    wm = load_world_model(folder)
    if not wm.has_heads:
        raise ValueError(f"{folder} loaded without agent heads; export a phase-2 or phase-3 run")
