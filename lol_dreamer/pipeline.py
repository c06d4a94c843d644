"""``lol-dreamer pipeline``: every phase, from LaneSim collection to real-game evaluation, in one folder.

``RUN/data`` (episodes + latents) → ``RUN/tokenizer`` → ``RUN/world_model`` (phase 1b) → ``RUN/bc``
(phase 2) → ``RUN/pmpo`` (phase 3) → ``RUN/eval`` (tokenizer, world-model and agent reports).

Each stage (:mod:`lol_dreamer.pipeline_stages`) is skipped when its marker ``RUN/stages/<stage>.json``
exists — written atomically after the stage finished, with the stage's arguments — and the
arguments are unchanged; changed arguments stop the pipeline with the differences and the way out
(``--redo STAGE``). A stage that fails or is interrupted is recorded as such in
``RUN/pipeline.json`` with the command that resumes it; the trainers continue from their last
checkpoint. ``pipeline.json`` records the settings, the reproducing command, the hardware and, per
stage, its status, arguments, timings and key metrics.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lol_dreamer.hardware import hardware
from lol_dreamer.io import atomic_write_json, read_json
from lol_dreamer.pipeline_config import PipelineConfig
from lol_dreamer.pipeline_stages import STAGE_NAMES, STAGES, Paths, Stage

PIPELINE_FILE = "pipeline.json"
MARKERS_DIR = "stages"


class StageFailed(RuntimeError):
    """A stage raised; the message names the stage and how to resume."""


def marker_path(out: Path, stage: str) -> Path:
    return out / MARKERS_DIR / f"{stage}.json"


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def stage_table(record: dict[str, Any], out: Path, running: str | None = None) -> str:
    """The progress overview: one row per stage with status, time and folder."""
    lines = [f"{'stage':<18}{'status':<13}{'time':>9}   folder", "-" * 72]
    for st in STAGES:
        r = record["stages"].get(st.name, {})
        status = "running" if st.name == running else r.get("status", "pending")
        f = Path(r.get("folder") or out)
        folder = str(Path(out.name) / f.relative_to(out)) if f.is_relative_to(out) else str(f)
        lines.append(f"{st.name:<18}{status:<13}{_fmt_time(r.get('seconds')):>9}   {folder}")
    total = sum(r.get("seconds") or 0.0 for r in record["stages"].values())
    lines.append(f"{'total':<31}{_fmt_time(total):>9}")
    return "\n".join(lines)


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(
        f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)
    )


def select_stages(stages: list[str] | None = None, until: str | None = None) -> list[Stage]:
    """The stages to run, in pipeline order (``stages`` names a subset; ``until`` the last one)."""
    names = list(STAGE_NAMES)
    for n in [*(stages or []), *([until] if until else [])]:
        if n not in STAGE_NAMES:
            raise ValueError(f"unknown stage {n!r}; the stages are {', '.join(STAGE_NAMES)}")
    if until:
        names = names[: names.index(until) + 1]
    if stages:
        names = [n for n in names if n in stages]
    return [s for s in STAGES if s.name in names]


def _downstream(name: str) -> list[str]:
    """``name`` and every stage that reads its output, directly or not."""
    out = [name]
    for st in STAGES:
        if any(n in out for n in st.needs) and st.name not in out:
            out.append(st.name)
    return out


def _check_lpips(settings: dict[str, Any]) -> None:
    if settings["lpips_weight"] <= 0:
        return
    from lol_dreamer.objectives.lpips_weights import find_vgg16_weights

    if find_vgg16_weights(settings["lpips_weights"]) is None:
        raise FileNotFoundError(
            "the tokenizer's LPIPS term needs torchvision's VGG16 weights, found neither under "
            "torch.hub.get_dir() (TORCH_HOME) nor at --lpips-weights; pass --lpips-weights PATH to a "
            "vgg16-*.pth file, or --lpips-weight 0 to train with MSE only"
        )


def run_pipeline(
    cfg: PipelineConfig,
    stages: list[str] | None = None,
    until: str | None = None,
    redo: list[str] | None = None,
    export: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or continue) the pipeline in ``cfg.out``.

    Args:
        cfg: the settings.
        stages: run only these stages (their inputs must exist).
        until: run the stages up to and including this one.
        redo: forget these stages' markers (and those of every stage after them) and run them again;
            their trainers continue from their checkpoints.
        export: after the stages, export the final agent world model as a bundled default model
            into this folder (see :mod:`lol_dreamer.export`).
        quiet: print only failures.
    Returns:
        The ``pipeline.json`` record.
    Raises:
        ValueError: a finished stage was run with other arguments, or a needed stage is missing.
        StageFailed: a stage raised (the message names it and how to resume).
    """
    settings = cfg.resolved()
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out).resolve()
    external = cfg.data is not None
    paths = Paths(out=out, data=Path(cfg.data).resolve() if external else out / "data",
                  external_data=external,
                  external_tokenizer=Path(cfg.tokenizer).resolve() if cfg.tokenizer else None,
                  external_world_model=Path(cfg.world_model).resolve() if cfg.world_model else None)  # fmt: skip
    if cfg.world_model and not cfg.tokenizer:
        raise ValueError(
            "--world-model needs --tokenizer: the tokenizer whose latents the world model was "
            "trained on (the pipeline would otherwise train a new one)"
        )
    chosen = select_stages(stages, until)
    say = (lambda *a: None) if quiet else print
    out.mkdir(parents=True, exist_ok=True)
    for name in redo or []:
        if name not in STAGE_NAMES:
            raise ValueError(
                f"unknown stage {name!r} for --redo; the stages are {', '.join(STAGE_NAMES)}"
            )
        for n in _downstream(name):
            marker_path(out, n).unlink(missing_ok=True)

    rec_path = out / PIPELINE_FILE
    record: dict[str, Any] = read_json(rec_path) if rec_path.exists() else {"stages": {}}
    record.update(
        settings=settings, command=cfg.command(), hardware=hardware(), folder=str(out),
        folders={"data": str(paths.data), "tokenizer": str(paths.tokenizer),
                 "world_model": str(paths.world_model), "bc": str(paths.bc), "pmpo": str(paths.pmpo),
                 "eval": str(paths.eval)},
    )  # fmt: skip
    for st in STAGES:  # stages done earlier (markers) or since undone (--redo, deleted markers)
        m = marker_path(out, st.name)
        r = record["stages"].setdefault(st.name, {"status": "pending"})
        r["folder"] = str(st.folder(paths))
        if m.exists():
            r.update(read_json(m), status="done")
        elif r.get("status") == "done":
            r.update(status="pending", seconds=None)

    # Refuse changed arguments and missing inputs before running anything.
    todo: list[tuple[Stage, dict[str, Any]]] = []
    for st in chosen:
        args = st.args(settings, paths)
        m = marker_path(out, st.name)
        if m.exists():
            old = read_json(m).get("args", {})
            if old != args:
                raise ValueError(
                    f"stage {st.name!r} in {out} was finished with other arguments ({_diff(old, args)}). "
                    f"Rerun with the settings it was finished with (the 'command' in {rec_path}), "
                    f"use a new --out, or pass --redo {st.name} to run it and the stages after it again "
                    "(trainers continue from their checkpoints, so raising a step count only adds steps)"
                )
            continue
        todo.append((st, args))
    names_todo = {st.name for st, _ in todo}
    for st, _ in todo:
        for need in st.needs:
            if need not in names_todo and not marker_path(out, need).exists():
                raise ValueError(
                    f"stage {st.name!r} needs the output of stage {need!r}, which is not done in {out}; "
                    f"run it first (add it to --stages, or drop --stages)"
                )
    if any(st.name == "tokenizer" for st, _ in todo):
        _check_lpips(settings)

    def save() -> None:
        record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        record["total_seconds"] = sum(r.get("seconds") or 0.0 for r in record["stages"].values())
        atomic_write_json(rec_path, record)

    save()
    say(f"lol-dreamer pipeline in {out} ({'quick' if cfg.quick else settings['preset']} settings)")
    say(stage_table(record, out))
    for st in chosen:
        if st.name not in names_todo:
            say(
                f"\n[{st.name}] done already ({_fmt_time(record['stages'][st.name].get('seconds'))}); skipped"
            )
    for st, args in todo:
        r = record["stages"][st.name]
        r.update(status="running", args=args, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                 error=None, seconds=None)  # fmt: skip
        save()
        say(f"\n[{st.name}] {st.what} → {st.folder(paths)}")
        t0 = time.perf_counter()
        try:
            metrics = st.run(args, paths, settings)
        except BaseException as e:
            r.update(status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                     error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)  # fmt: skip
            save()
            hint = (
                f"pipeline stage {st.name!r} {r['status']} after {_fmt_time(r['seconds'])}"
                + (f": {e}" if not isinstance(e, KeyboardInterrupt) else "")
                + f". Finished stages are kept; fix the cause and rerun `{cfg.command()}` — "
                f"it skips them and {st.name!r} resumes"
                + (" from its last checkpoint" if (st.folder(paths) / "state").exists() else "")
                + f". Status: {rec_path}"
            )
            if isinstance(e, KeyboardInterrupt):
                print(hint, file=sys.stderr)
                raise
            raise StageFailed(hint) from e
        seconds = time.perf_counter() - t0
        marker = {"args": args, "seconds": seconds,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "metrics": metrics}  # fmt: skip
        atomic_write_json(marker_path(out, st.name), marker)
        r.update(marker, status="done")
        save()
        say(f"[{st.name}] done in {_fmt_time(seconds)}\n")
        say(stage_table(record, out))
    if export is not None:
        from lol_dreamer.export import export_default

        export_default(out, export or None)
    say("\n" + summary(record, out))
    return record


def summary(record: dict[str, Any], out: Path) -> str:
    """The closing paragraph: every folder and the key metrics measured so far."""
    st = record["stages"]
    m = {k: (v.get("metrics") or {}) for k, v in st.items() if v.get("status") == "done"}
    f = record["folders"]
    lines = [f"Pipeline folder {out}:"]
    desc = [("data", "episodes + latents"), ("tokenizer", "tokenizer run"),
            ("world_model", "phase-1 world model"), ("bc", "phase-2 agent world model (BC)"),
            ("pmpo", "phase-3 agent world model (PMPO)"), ("eval", "reports, plots, videos")]  # fmt: skip
    for key, what in desc:
        lines.append(f"  {what:<34} {f[key]}")
    if "collect" in m:
        lines.append(f"data: {m['collect']['episodes']} episodes, {m['collect']['frames']} frames")
    if "eval-tokenizer" in m:
        t = m["eval-tokenizer"]
        probe = ", ".join(
            f"{k} {v:.2f}" for k, v in (t.get("probe") or {}).items() if v is not None
        )
        lines.append(f"tokenizer: held-out PSNR {t['psnr']:.2f} dB, SSIM {t['ssim'] or float('nan'):.3f}"
                     + (f", probe R² {probe}" if probe else ""))  # fmt: skip
    if "eval-world-model" in m:
        w = m["eval-world-model"]
        ps = ", ".join(f"h={h}: {v:.1f}" for h, v in (w.get("psnr") or {}).items())
        cl = ", ".join(f"h={h}: {v:.1f}" for h, v in (w.get("psnr_copy_last") or {}).items())
        lines.append(f"world model: PSNR dB {ps} (copy-last {cl})")
        if "coherent_horizon" in w:
            lines.append(f"  coherent horizon {w['coherent_horizon']:.1f} frames "
                         f"(copy-last {w['coherent_horizon_copy_last']:.1f}); dream {w['dream_fps']:.1f} frames/s")  # fmt: skip
        if "reward_mae" in w:
            lines.append(
                f"  reward MAE {w['reward_mae']:.4f} (zero predictor {w['reward_zero_predictor_mae']:.4f})"
            )
    if "eval-agent" in m:
        for name, r in m["eval-agent"]["returns"].items():
            ci = "" if r["ci95"] is None else f" [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
            lines.append(f"  LaneSim return {name:<24} {r['mean']:8.3f}{ci}")
    total = record.get("total_seconds") or 0.0
    lines.append(f"Stage time in total {_fmt_time(total)}; the record is {out / PIPELINE_FILE}.")
    if "pmpo" in m:
        lines.append(
            f"Next: `lol-dreamer demo --world-model {f['pmpo']}`, `lol-dreamer play --world-model {f['pmpo']}`, "
            f"or export it as the bundled default with `{record['command']} --export-default`."
        )
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The ``lol-dreamer pipeline`` flags as a :class:`PipelineConfig`."""
    from dataclasses import fields

    return PipelineConfig(**{f.name: getattr(args, f.name) for f in fields(PipelineConfig)})


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lol-dreamer pipeline`` (flags: :mod:`lol_dreamer.commands.pipeline`)."""
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    redo = [s.strip() for s in args.redo.split(",") if s.strip()] if args.redo else None
    run_pipeline(config_from_args(args), stages=stages, until=args.until, redo=redo,
                 export=args.export_default, quiet=args.quiet)  # fmt: skip
    return 0
