"""``MODEL_CARD.md`` of an exported default model, generated from the pipeline's ``pipeline.json``.

The card states what the model is, what it was trained on, how long each phase ran on which
hardware, every SPEC §9 measure the pipeline's evaluation stages produced, and the exact command
that reproduces it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lol_dreamer.hardware import describe
from lol_dreamer.io import read_json


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _horizon_rows(label: str, table: dict[str, Any] | None, digits: int = 2) -> str:
    if not table:
        return ""
    return f"| {label} | " + " | ".join(_f(table.get(h), digits) for h in table) + " |\n"


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _adopted_run(record: dict[str, Any], folder: str) -> dict[str, Any]:
    """Steps, batch size and architecture of a run the pipeline adopted (``--tokenizer`` or
    ``--world-model``; ``folder`` is ``"tokenizer"`` or ``"world_model"``), from its own config."""
    path = Path((record.get("folders") or {}).get(folder, "")) / "config.json"
    try:
        cfg = read_json(path)
    except (OSError, ValueError):
        return {}
    train = cfg.get("train") or {}
    how = [f"lr {train['lr']:g}"] if train.get("lr") is not None else []
    if train.get("ema_decay"):
        how.append(f"EMA {train['ema_decay']:g}")
    amp = {"bf16": "bf16 autocast", "off": "fp32"}.get(str(train.get("amp")))
    if amp:
        how.append(amp)
    flow = (cfg.get("objective") or {}).get("flow_frac")
    if flow is not None:
        how.append(f"flow fraction {flow:g}")
    progress = cfg.get("progress") or {}
    steps = progress.get("step") or _last_metrics_step(path.parent) or train.get("steps")
    where = ""
    if progress.get("hardware"):
        where = f"{_hms(progress.get('seconds'))} on {describe(progress['hardware'])}"
    return {
        "steps": steps,
        "batch_size": train.get("batch_size"),
        "arch": (cfg.get("model") or {}).get("arch", "transformer"),
        "how": ", ".join(how),
        "where": where,
    }


def _last_metrics_step(run: Path) -> int | None:
    """The step of a run's last ``metrics.jsonl`` row (a ``--time-limit`` run stops before
    ``--steps``), or None."""
    try:
        with open(run / "metrics.jsonl", "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()
        return int(json.loads(tail[-1])["step"]) if tail else None
    except (OSError, ValueError, KeyError, IndexError):
        return None


# Stages the pipeline can adopt instead of training: stage → (its key in pipeline.json's
# ``folders`` and in the stage's arguments, the flag that adopts it).
_ADOPTABLE = {
    "tokenizer": ("tokenizer", "--tokenizer"),
    "dynamics": ("world_model", "--world-model"),
}


def _is_adopted(record: dict[str, Any], stage: str) -> bool:
    return bool(((record.get("stages") or {}).get(stage, {}).get("metrics") or {}).get("adopted"))


def _adopted_note(record: dict[str, Any]) -> list[str]:
    """A paragraph naming the runs the pipeline adopted instead of training (none: no lines)."""
    adopted = [
        f"`{flag} {(record['stages'][stage].get('args') or {}).get(key, '?')}`"
        for stage, (key, flag) in _ADOPTABLE.items()
        if _is_adopted(record, stage)
    ]
    if not adopted:
        return []
    return [
        f"The pipeline adopted runs trained on their own ({', '.join(adopted)}): each run folder's "
        "`config.json` holds the settings it was trained with (its `train` section), and the "
        "training table below gives their steps.",
        "",
    ]


def model_card(
    record: dict[str, Any],
    run: Path,
    source: str,
    config: dict[str, Any],
    clips: dict[str, Any],
    total_bytes: int,
) -> str:
    """The card's Markdown text.

    Args:
        record: ``pipeline.json``.
        run: the pipeline folder.
        source: the exported subfolder (``pmpo`` or ``bc``).
        config: the exported ``config.json``.
        clips: what :func:`lol_dreamer.export._trim_clips` kept.
        total_bytes: size of the weights and clips.
    """
    s = record["settings"]
    st = record["stages"]
    m = {k: v.get("metrics") or {} for k, v in st.items() if v.get("status") == "done"}
    hw = record.get("hardware", {})
    res = (m.get("collect") or {}).get("resolution", s["res"])
    lines = [
        "# lol-dreamer default model",
        "",
        f"A DreamerV4 world model of LaneSim (the package's LoL-style lane game) with agent heads, "
        f"trained by `lol-dreamer pipeline` and exported from its `{source}` stage "
        f"({'phase 3, PMPO in imagination' if source == 'pmpo' else 'phase 2, behaviour cloning'}). "
        f'`gym.make("LoLDream-v0")` and `lol_dreamer.load_world_model()` load it; '
        f"`lol_dreamer.policy.load_policy(path)` loads its policy (task `{config.get('task', s['task'])}`).",
        "",
        "## Reproduce",
        "",
        "```",
        record["command"],
        f"{record['command']} --export-default",
        "```",
        "",
        *_adopted_note(record),
        "## Model",
        "",
        f"- presets: `{s['preset']}` (tokenizer, dynamics); {res}×{res} px frames, "
        f"context {config.get('world_model', {}).get('context', 'n/a')} frames, K = "
        f"{config.get('world_model', {}).get('k', 4)} denoising steps per frame",
        f"- tokenizer parameters: {_f((m.get('tokenizer') or {}).get('n_params'))}",
        f"- files: {total_bytes / 2**20:.2f} MB (weights, start clips as fp16 latents, "
        f"{clips['clips']} held-out clips of {clips['frames']} true frames)",
        "",
        "## Data",
        "",
    ]
    c = m.get("collect") or {}
    if s.get("data"):
        lines.append(f"- dataset given with `--data` ({Path(s['data']).name})")
    else:
        lines.append(
            f"- LaneSim, scripted player (skill 0.8 ± 0.1), task `{s['collect_task']}`, "
            f"{s['episodes']} episodes of at most {s['max_steps']} steps, seed {s['seed']}"
        )
    if c:
        rets = ", ".join(f"{t} {_f(v, 3)}" for t, v in (c.get("mean_return") or {}).items())
        lines.append(
            f"- {c.get('episodes')} episodes, {c.get('frames')} frames; mean scripted return: {rets}"
        )
    lines += [
        "",
        "## Training",
        "",
        "| stage | steps | batch | wall time | held-out |",
        "|---|---|---|---|---|",
    ]
    for name, steps, batch in (
        ("tokenizer", s["steps_tokenizer"], s["batch_tokenizer"]),
        ("dynamics", s["steps_dynamics"], s["batch_dynamics"]),
        ("bc", s["steps_agent"], s["batch_agent"]),
        ("pmpo", s["steps_imagine"], s["batch_imagine"]),
    ):
        r = st.get(name, {})
        ev = {k: v for k, v in (r.get("metrics") or {}).items()
              if isinstance(v, float) and k not in ("final_loss", "steps_per_s")}  # fmt: skip
        held = ", ".join(f"{k} {_f(v, 4)}" for k, v in list(ev.items())[:4]) or "n/a"
        label, wall = name, _hms(r.get("seconds"))
        if name in _ADOPTABLE and _is_adopted(record, name):
            # adopted with --tokenizer / --world-model: its own run folder says how it was trained
            own = _adopted_run(record, _ADOPTABLE[name][0])
            steps, batch = own.get("steps", "?"), own.get("batch_size", "?")
            if name == "tokenizer":
                detail = f"{own.get('arch', '?')}, adopted"
            else:
                detail = "adopted" + (f"; {own['how']}" if own.get("how") else "")
            label = f"{name} ({detail})"
            wall = (
                f"trained separately, {own['where']}" if own.get("where") else "trained separately"
            )
        elif name == "bc" and s.get("trunk_lr_scale") not in (None, 1.0):
            scale = s["trunk_lr_scale"]
            label = f"bc ({'transformer frozen' if scale == 0 else f'transformer lr × {scale}'})"
        lines.append(f"| {label} | {steps} | {batch} | {wall} | {held} |")
    lines += [
        "",
        f"Total stage time {_hms(record.get('total_seconds'))}. Hardware: {hw.get('platform')}, "
        f"{hw.get('cpu_count')} CPUs, torch {hw.get('torch')} ({hw.get('torch_threads')} threads)"
        + (f", {hw['cuda']}" if hw.get("cuda") else ", no GPU")
        + ".",
        "",
        "## Evaluation (SPEC §9, held-out LaneSim episodes)",
        "",
    ]
    t = m.get("eval-tokenizer")
    if t:
        probe = ", ".join(f"{k} {_f(v, 3)}" for k, v in (t.get("probe") or {}).items()) or "n/a"
        lines += [
            f"- Tokenizer: PSNR {_f(t.get('psnr'))} dB, SSIM {_f(t.get('ssim'), 3)} "
            f"({t.get('held_out_frames')} held-out frames); linear-probe R²: {probe}",
            "",
        ]
    w = m.get("eval-world-model")
    if w:
        hz = list((w.get("psnr") or {}).keys())
        lines += [
            f"Dynamics, open loop with the true actions ({w.get('n_rollouts')} rollouts of "
            f"{w.get('rollout_frames')} frames):",
            "",
            "| measure | " + " | ".join(f"h={h}" for h in hz) + " |",
            "|---|" + "---|" * len(hz),
        ]
        body = (
            _horizon_rows("PSNR dB, model", w.get("psnr"))
            + _horizon_rows("PSNR dB, copy-last floor", w.get("psnr_copy_last"))
            + _horizon_rows("PSNR dB, tokenizer ceiling", w.get("psnr_tokenizer"))
            + _horizon_rows("SSIM, model", w.get("ssim"), 3)
            + _horizon_rows("champion position error px", w.get("position_error_px"), 1)
            + _horizon_rows("position error px, copy-last", w.get("position_error_px_copy_last"), 1)
            + _horizon_rows(
                "action following: PSNR drop dB", w.get("action_following_psnr_drop_db")
            )
        )
        lines += [body.rstrip("\n"), ""]
        if "coherent_horizon" in w:
            lines.append(
                f"- Coherent horizon: {_f(w['coherent_horizon'], 1)} frames (copy-last "
                f"{_f(w['coherent_horizon_copy_last'], 1)})"
            )
        if "reward_mae" in w:
            lines.append(
                f"- Reward head MAE: {_f(w['reward_mae'], 4)} (predicting 0: {_f(w['reward_zero_predictor_mae'], 4)})"
            )
        lines.append(
            f"- Dream speed in the evaluation (batched): {_f(w.get('dream_fps'), 1)} frames/s"
        )
        lines.append("")
    a = m.get("eval-agent")
    if a:
        lines += [
            f"Agents in the real LaneSim, task `{s['task']}`, {s['eval_seeds']} seeds × "
            f"{s['eval_episodes']} episodes of at most {s['eval_max_steps']} steps (95% CI, Student t):",
            "",
            "| agent | mean return | 95% CI | mean length |",
            "|---|---|---|---|",
        ]
        for name, r in a["returns"].items():
            ci = "n/a" if r["ci95"] is None else f"[{_f(r['ci95'][0], 3)}, {_f(r['ci95'][1], 3)}]"
            lines.append(f"| {name} | {_f(r['mean'], 3)} | {ci} | {_f(r['mean_length'], 1)} |")
        lines.append("")
    missing = [n for n in ("eval-tokenizer", "eval-world-model", "eval-agent") if n not in m]
    if missing:
        lines += [f"Not measured (stages not run): {', '.join(missing)}.", ""]
    lines += [
        "## Limits",
        "",
        "Trained on the synthetic LaneSim game only, at small size on CPU; it has never seen real "
        "League of Legends footage. Its numbers above are the whole claim.",
        "",
    ]
    return "\n".join(lines)
