"""The stages of ``lol-dreamer pipeline``: each calls one existing job and returns its key metrics.

A stage is a name, the folder it writes (relative to the pipeline folder RUN), the stages whose
output it reads, a function of the resolved settings giving its *arguments* (recorded in its
marker; a change is detected on the next run) and a function that does the work. The trainers are
always called with ``--resume`` (a fresh start when their folder holds no ``state/``), so a stage
interrupted mid-way continues from its last checkpoint; collection tops the dataset up to the
requested episode count; tokenization skips episodes already encoded by the same tokenizer.

Jobs are called as Python functions: through their own argument parsers (so every flag keeps the
command's default) when they only expose ``run(args)``, directly when they expose a function.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HORIZONS = (1, 4, 16, 64)


@dataclass(frozen=True)
class Paths:
    """The folders of one pipeline (absolute)."""

    out: Path
    data: Path
    external_data: bool
    external_tokenizer: Path | None = None
    external_world_model: Path | None = None

    @property
    def tokenizer(self) -> Path:
        return self.external_tokenizer or self.out / "tokenizer"

    @property
    def world_model(self) -> Path:
        return self.external_world_model or self.out / "world_model"

    @property
    def bc(self) -> Path:
        return self.out / "bc"

    @property
    def pmpo(self) -> Path:
        return self.out / "pmpo"

    @property
    def eval(self) -> Path:
        return self.out / "eval"


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    Attributes:
        name: stage name (``--stages``, ``--until``, ``--redo``).
        folder: what it writes, as a function of the paths.
        needs: stages whose output it reads.
        args: ``(settings, paths) -> dict`` of the arguments recorded in its marker.
        run: ``(args, paths, settings) -> metrics`` doing the work (settings that do not change
            the result, such as ``workers``, are read from ``settings``, not recorded).
        what: one line for the stage table.
    """

    name: str
    folder: Callable[[Paths], Path]
    needs: tuple[str, ...]
    args: Callable[[dict[str, Any], Paths], dict[str, Any]]
    run: Callable[[dict[str, Any], Paths, dict[str, Any]], dict[str, Any]]
    what: str


# ---------------------------------------------------------------------------------------------
# Helpers


def _cli(argv: list[Any]) -> int:
    """Run a ``lol-dreamer`` subcommand in this process through its own parser (its defaults apply)."""
    from lol_dreamer.cli import build_parser

    args = build_parser().parse_args([str(a) for a in argv])
    return int(args.func(args) or 0)


def last_eval(run_dir: Path) -> dict[str, Any]:
    """The step and the ``eval/…`` scalars of the last row of ``run_dir/metrics.jsonl`` that has them."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out: dict[str, Any] = {"step": rows[-1]["step"]} if rows else {}
    for row in reversed(rows):
        ev = {k[len("eval/") :]: v for k, v in row.items() if k.startswith("eval/")}
        if ev:
            out.update(ev)
            break
    if rows:
        out["final_loss"] = rows[-1].get("loss")
        rates = [r["perf/steps_per_s"] for r in rows[-50:] if "perf/steps_per_s" in r]
        if rates:
            out["steps_per_s"] = float(sorted(rates)[len(rates) // 2])
    return out


def _n_params(run_dir: Path) -> int | None:
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        return None
    return json.loads(cfg_path.read_text()).get("n_params")


def _lr_flag(lr: float | None) -> list[Any]:
    """``--lr`` only when a rate is set, so the trainer's own default applies otherwise."""
    return [] if lr is None else ["--lr", lr]


def _precision_flag(precision: str | None) -> list[Any]:
    """``--precision`` only when one is set, so the trainer's own default (``auto``) applies otherwise."""
    return [] if precision is None else ["--precision", precision]


def _loop_flags(
    s: dict[str, Any], steps: int, seed: int, lr: float | None = None, precision: str | None = None
) -> list[Any]:
    """Flags of the shared loop; checkpoint/eval intervals and the device come from the settings
    (they do not change the trained weights, so they are not part of a stage's arguments).
    ``lr`` and ``precision`` are stage arguments (see :func:`_lr_flag`)."""
    eval_every = 0 if s["quick"] else max(1, steps // 5)
    return [
        "--steps", steps, "--save-every", s["save_every"], "--eval-every", eval_every,
        "--seed", seed, "--device", s["device"], "--resume", *_lr_flag(lr),
        *_precision_flag(precision),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Stages


def _collect_args(s: dict[str, Any], p: Paths) -> dict[str, Any]:
    if p.external_data:
        return {"data": str(p.data)}
    return {k: s[k] for k in ("episodes", "res", "collect_task", "max_steps", "seed")}


def _collect(a: dict[str, Any], p: Paths, s: dict[str, Any]) -> dict[str, Any]:
    from lol_dreamer.actions import TASKS
    from lol_dreamer.data import open_dataset

    if not p.external_data:
        from lol_dreamer.data.storage import INDEX_FILE, read_index
        from lol_dreamer.envs.collect import collect

        have = len(read_index(p.data)["episodes"]) if (p.data / INDEX_FILE).exists() else 0
        if have > a["episodes"]:
            raise ValueError(
                f"{p.data} already holds {have} episodes, more than --episodes {a['episodes']}; "
                "raise --episodes or use a new --out"
            )
        if have < a["episodes"]:  # episode k's seeds depend on (seed, k): topping up = one run
            collect(
                p.data, a["episodes"] - have, res=a["res"], task=a["collect_task"],
                max_steps=a["max_steps"], seed=a["seed"], workers=s["workers"],
            )  # fmt: skip
    ds = open_dataset(p.data)
    if len(ds) < 2:
        raise ValueError(
            f"{p.data} holds {len(ds)} episode(s); the pipeline needs at least 2 (one is held out)"
        )
    returns: dict[str, list[float]] = {}
    for i in range(len(ds)):
        ep = ds[i]
        returns.setdefault(TASKS[int(ep.task)], []).append(float(ep.rewards[:, int(ep.task)].sum()))
    return {
        "episodes": len(ds),
        "frames": int(ds.total_frames),
        "resolution": int(ds[0].resolution),
        "mean_return": {t: sum(v) / len(v) for t, v in returns.items()},
    }


def _adopted_args(folder: Path, key: str, flag: str, command: str) -> dict[str, Any]:
    """Stage arguments of a run adopted with ``flag``: its path and its weights' hash."""
    from lol_dreamer.world_model_training import file_sha256

    weights = folder / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(
            f"{flag} {folder} holds no model.safetensors; pass a run folder written by "
            f"`lol-dreamer {command}`"
        )
    return {key: str(folder), "sha256": file_sha256(weights)}


def _tokenizer_args(s: dict[str, Any], p: Paths) -> dict[str, Any]:
    if p.external_tokenizer is not None:
        return _adopted_args(p.external_tokenizer, "tokenizer", "--tokenizer", "train tokenizer")
    return {
        "preset": s["preset"],
        "arch": s["arch_tokenizer"],
        "lr": s["lr_tokenizer"],
        "steps": s["steps_tokenizer"],
        "batch_size": s["batch_tokenizer"],
        "lpips_weight": s["lpips_weight"],
        "lpips_weights": s["lpips_weights"],
        "seed": s["seed"],
    }


def _tokenizer(a: dict[str, Any], p: Paths, s: dict[str, Any]) -> dict[str, Any]:
    if p.external_tokenizer is not None:  # adopt a trained tokenizer: check it rebuilds and loads
        from lol_dreamer.checkpoint import load_model, load_run_config

        kind = load_run_config(p.tokenizer).get("kind")
        if kind != "tokenizer":
            raise ValueError(f"--tokenizer {p.tokenizer} is a {kind!r} run, not a tokenizer run")
        load_model(p.tokenizer)
        return {**last_eval(p.tokenizer), "n_params": _n_params(p.tokenizer), "adopted": True}
    argv = ["train", "tokenizer", "--data", p.data, "--out", p.tokenizer, "--preset", a["preset"],
            "--arch", a["arch"], "--batch-size", a["batch_size"],
            "--lpips-weight", a["lpips_weight"]]  # fmt: skip
    if a.get("lpips_weights"):
        argv += ["--lpips-weights", a["lpips_weights"]]
    _cli(argv + _loop_flags(s, a["steps"], a["seed"], a["lr"]))
    return {**last_eval(p.tokenizer), "n_params": _n_params(p.tokenizer)}


def _tokenize(a: dict[str, Any], p: Paths, s: dict[str, Any]) -> dict[str, Any]:
    from lol_dreamer.latents import tokenize_dataset

    r = tokenize_dataset(p.tokenizer, p.data, device=s["device"], only_missing=True)
    return {k: r[k] for k in ("episodes", "skipped", "frames", "n_z", "d_z", "seconds")}


def _dynamics_args(s: dict[str, Any], p: Paths) -> dict[str, Any]:
    if p.external_world_model is not None:
        return _adopted_args(
            p.external_world_model, "world_model", "--world-model", "train dynamics"
        )
    keys = ("preset", "steps_dynamics", "batch_dynamics", "lr_dynamics", "flow_frac",
            "ema_dynamics", "precision", "seed")  # fmt: skip
    return {k: s[k] for k in keys}


def _adopt_world_model(p: Paths) -> dict[str, Any]:
    """Check an adopted phase-1b run: a dynamics run, trained on this pipeline's tokenizer, loadable."""
    from lol_dreamer.checkpoint import load_run_config
    from lol_dreamer.world_model import load_world_model
    from lol_dreamer.world_model_training import file_sha256

    cfg = load_run_config(p.world_model)
    if cfg.get("kind") != "dynamics":
        raise ValueError(
            f"--world-model {p.world_model} is a {cfg.get('kind')!r} run, not a phase-1b run from "
            "`lol-dreamer train dynamics`"
        )
    want = file_sha256(p.tokenizer / "model.safetensors")
    have = cfg.get("tokenizer", {}).get("sha256")
    if have != want:
        raise ValueError(
            f"--world-model {p.world_model} was trained on the latents of another tokenizer "
            f"({cfg.get('tokenizer', {}).get('path')}, sha256 {str(have)[:12]}…) than this pipeline's "
            f"{p.tokenizer} (sha256 {want[:12]}…); pass the tokenizer it was trained with as --tokenizer"
        )
    load_world_model(p.world_model)
    return {**last_eval(p.world_model), "adopted": True}


def _dynamics(a: dict[str, Any], p: Paths, s: dict[str, Any]) -> dict[str, Any]:
    if p.external_world_model is not None:
        return _adopt_world_model(p)
    argv = ["train", "dynamics", "--data", p.data, "--tokenizer", p.tokenizer,
            "--out", p.world_model, "--preset", a["preset"], "--batch-size", a["batch_dynamics"]]  # fmt: skip
    if a["flow_frac"] is not None:
        argv += ["--flow-frac", a["flow_frac"]]
    if a["ema_dynamics"]:
        argv += ["--ema", "--ema-decay", a["ema_dynamics"]]
    flags = _loop_flags(s, a["steps_dynamics"], a["seed"], a["lr_dynamics"], a["precision"])
    _cli(argv + flags)
    return last_eval(p.world_model)


def _bc_args(s: dict[str, Any], p: Paths) -> dict[str, Any]:
    keys = ("task", "steps_agent", "batch_agent", "lr_agent", "video_weight", "trunk_lr_scale",
            "precision", "seed")  # fmt: skip
    return {k: s[k] for k in keys}


def _bc(a: dict[str, Any], p: Paths, s: dict[str, Any]) -> dict[str, Any]:
    argv = ["train", "agent", "--world-model", p.world_model, "--data", p.data, "--out", p.bc,
            "--task", a["task"], "--batch-size", a["batch_agent"]]  # fmt: skip
    if a["video_weight"] is not None:
        argv += ["--video-weight", a["video_weight"]]
    if a.get("trunk_lr_scale") is not None:
        argv += ["--trunk-lr-scale", a["trunk_lr_scale"]]
    flags = _loop_flags(s, a["steps_agent"], a["seed"], a["lr_agent"], a["precision"])
    _cli(argv + flags)
    return last_eval(p.bc)


def _pmpo_args(s: dict[str, Any], p: Paths) -> dict[str, Any]:
    keys = ("steps_imagine", "batch_imagine", "lr_imagine", "horizon", "precision", "seed")
    return {k: s[k] for k in keys}


def _pmpo(a: dict[str, Any], p: Paths, s: dict[str, Any]) -> dict[str, Any]:
    _cli([
        "train", "imagine", "--agent", p.bc, "--data", p.data, "--out", p.pmpo,
        "--steps", a["steps_imagine"], "--batch", a["batch_imagine"], "--horizon", a["horizon"],
        "--save-every", s["save_every"], "--seed", a["seed"], "--device", s["device"], "--resume",
        *_lr_flag(a["lr_imagine"]), *_precision_flag(a["precision"]),
    ])  # fmt: skip
    out = last_eval(p.pmpo)
    path = p.pmpo / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    for key in sorted({k for r in rows for k in r}):
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        if key.startswith(("loss", "metric/")) and vals:
            tail = vals[-max(1, len(vals) // 5) :]
            out[f"{key} (last 20%)"] = sum(tail) / len(tail)
    real = [r for r in rows if "real/return" in r]  # the live policy in LaneSim during training
    if real:
        out["real_return_curve"] = [
            {"step": r["step"], "return": r["real/return"], "ci95": r.get("real/return_ci95")}
            for r in real
        ]
    return out


def _eval_tokenizer_args(s: dict[str, Any], p: Paths) -> dict[str, Any]:
    return {"max_episodes": 4 if s["quick"] else 32, "max_frames": 64 if s["quick"] else 256}


def _eval_tokenizer(a: dict[str, Any], p: Paths, s: dict[str, Any]) -> dict[str, Any]:
    from lol_dreamer.evaluation.tokenizer_eval import evaluate_tokenizer, format_table

    r = evaluate_tokenizer(
        p.tokenizer, p.data, max_episodes=a["max_episodes"], max_frames=a["max_frames"],
        out_dir=p.eval / "tokenizer", progress=False,
    )  # fmt: skip
    print(format_table(r))
    return {
        k: r[k]
        for k in ("psnr", "ssim", "probe", "held_out_episodes", "held_out_frames", "json", "png")
    }


def _eval_world_model_args(s: dict[str, Any], p: Paths) -> dict[str, Any]:
    return {
        "episodes": s["wm_eval_episodes"],
        "contexts": 2 if s["quick"] else 4,
        "horizons": list(HORIZONS[:3] if s["quick"] else HORIZONS),
        "seed": s["seed"],
    }


def _eval_world_model(a: dict[str, Any], p: Paths, s: dict[str, Any]) -> dict[str, Any]:
    from lol_dreamer.data import open_dataset
    from lol_dreamer.evaluation.world_model_eval import evaluate_world_model
    from lol_dreamer.evaluation.world_model_report import format_report, plot_report
    from lol_dreamer.io import atomic_write_json
    from lol_dreamer.world_model import load_world_model

    # RUN/bc: phase 3 freezes the transformer and the reward/continue heads, so this is also the
    # exported model's dynamics; its config names the episodes held out from training.
    wm = load_world_model(p.bc)
    r = evaluate_world_model(
        wm,
        open_dataset(p.data),
        a["episodes"],
        a["contexts"],
        None,
        tuple(a["horizons"]),
        a["seed"],
        progress=True,
    )
    js = atomic_write_json(p.eval / "world_model" / "eval_world_model.json", r)
    png = plot_report(r, js.with_suffix(".png"))
    print(format_report(r))
    out: dict[str, Any] = {
        "psnr": r["psnr"].get("model"),
        "psnr_copy_last": r["psnr"].get("copy_last"),
        "psnr_tokenizer": r["psnr"].get("tokenizer"),
        "ssim": r["ssim"].get("model"),
        "action_following_psnr_drop_db": r["action_following"]["psnr_drop_db"],
        "dream_fps": r["setup"]["dream_fps"],
        "n_rollouts": r["n_rollouts"],
        "rollout_frames": r["rollout_frames"],
        "json": str(js),
        "png": str(png),
    }
    if "position_error_px" in r:
        out["position_error_px"] = r["position_error_px"]["model"]
        out["position_error_px_copy_last"] = r["position_error_px"]["copy_last"]
        out["coherent_horizon"] = r["coherent_horizon"]["model"]["mean"]
        out["coherent_horizon_copy_last"] = r["coherent_horizon"]["copy_last"]["mean"]
    if r.get("reward"):
        out["reward_mae"] = r["reward"]["mae_all"]
        out["reward_zero_predictor_mae"] = r["reward"]["zero_predictor_mae"]
    return out


def _eval_agent_args(s: dict[str, Any], p: Paths) -> dict[str, Any]:
    keys = ("task", "eval_seeds", "eval_episodes", "eval_max_steps")
    return {k: s[k] for k in keys}


def _eval_agent(a: dict[str, Any], p: Paths, s: dict[str, Any]) -> dict[str, Any]:
    js = p.eval / f"agent_{a['task']}.json"
    _cli([
        "eval", "agent", "--agent", p.pmpo, "--task", a["task"], "--seeds", a["eval_seeds"],
        "--episodes", a["eval_episodes"], "--max-steps", a["eval_max_steps"], "--out", js,
        "--video", js.with_suffix(".mp4"), "--quiet",
    ])  # fmt: skip
    report = json.loads(js.read_text())
    rows = {
        name: {"mean": r["mean"], "ci95": r["ci95"], "mean_length": _mean(r["lengths"])}
        for name, r in report["results"].items()
    }
    return {"returns": rows, "json": str(js), "video": str(js.with_suffix(".mp4"))}


def _mean(nested: list[list[float]]) -> float:
    flat = [x for row in nested for x in row]
    return sum(flat) / max(1, len(flat))


STAGES: tuple[Stage, ...] = (
    Stage("collect", lambda p: p.data, (), _collect_args, _collect,
          "LaneSim episodes with the scripted player (or the given --data)"),
    Stage("tokenizer", lambda p: p.tokenizer, ("collect",), _tokenizer_args, _tokenizer,
          "phase 1a: video tokenizer"),
    Stage("tokenize", lambda p: p.data, ("tokenizer",), lambda s, p: {"tokenizer": str(p.tokenizer)},
          _tokenize, "latents of every episode"),
    Stage("dynamics", lambda p: p.world_model, ("tokenize",), _dynamics_args, _dynamics,
          "phase 1b: dynamics, shortcut forcing"),
    Stage("bc", lambda p: p.bc, ("dynamics",), _bc_args, _bc,
          "phase 2: agent tokens, BC + reward + continue heads"),
    Stage("pmpo", lambda p: p.pmpo, ("bc",), _pmpo_args, _pmpo,
          "phase 3: PMPO in imagination"),
    Stage("eval-tokenizer", lambda p: p.eval / "tokenizer", ("tokenizer",), _eval_tokenizer_args,
          _eval_tokenizer, "held-out PSNR/SSIM, probe R²"),
    Stage("eval-world-model", lambda p: p.eval / "world_model", ("bc",), _eval_world_model_args,
          _eval_world_model, "open-loop fidelity, reward error"),
    Stage("eval-agent", lambda p: p.eval, ("pmpo",), _eval_agent_args, _eval_agent,
          "real-LaneSim returns: random, scripted, BC, PMPO"),
)  # fmt: skip
STAGE_NAMES = tuple(s.name for s in STAGES)
