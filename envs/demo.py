"""``lol-dreamer demo``: the dream and the real LaneSim side by side, from the same start, same actions.

1. LaneSim is reset with a seed and the scripted player plays ``C`` context frames (C = the world
   model's context length).
2. Those frames, encoded by the world model's tokenizer, with the scripted actions, are the
   dream's context (``DreamEnv.reset(options={"start": frames, "actions": actions})``); the first
   dreamed frame is therefore the encode → decode of the last real context frame.
3. Both are stepped with the same actions: the world model's own agent picks them from the
   dream's agent features when it has policy heads, else the scripted player picks them from
   LaneSim's state.
4. Written: a side-by-side video (dream left, LaneSim right; mp4 through PyAV, gif when mp4 cannot
   be written), a PNG plot of PSNR and player-position error over time (the champion detector
   ``lol_dreamer.envs.lane.detector.detect_player``) and ``demo.json`` with the per-frame numbers.

Dimension letters: ``F`` frames shown, ``C`` context frames, ``H``/``W`` frame side.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lol_dreamer.actions import STAND, TASKS

NO_DEFAULT = (
    "no default world model is bundled with this install (lol_dreamer/assets/default/ is empty) and "
    "no --world-model was given. Make one with `lol-dreamer pipeline --out RUN` (add --quick for a "
    "small one in minutes), then run `lol-dreamer demo --world-model RUN/bc` (phase 2) or "
    "`--world-model RUN/pmpo` (phase 3); `lol-dreamer pipeline --out RUN --export-default` bundles it "
    "as the default"
)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        video: the side-by-side video file; plot: the PNG; report: ``demo.json``.
        frames: frames dreamed (and played in LaneSim).
        fps: dreamed frames per second (dynamics + decoding, batch 1).
        psnr: ``[F]`` PSNR of each dreamed frame against LaneSim's (dB, 100 = identical).
        position_error: ``[F]`` player-position error in px (inf = the player is missing in the
            dream, nan = missing in LaneSim).
        actor: ``"agent"`` (the world model's policy head) or ``"scripted"``.
        dream, real: ``uint8 [F, H, W, 3]`` the dreamed and the LaneSim frames.
        actions: ``int64 [F, 9]`` the actions both were stepped with.
    """

    video: Path
    plot: Path
    report: Path
    frames: int
    fps: float
    psnr: np.ndarray
    position_error: np.ndarray
    actor: str
    dream: np.ndarray
    real: np.ndarray
    actions: np.ndarray


def frame_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two ``uint8 [H, W, 3]`` frames (100 when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else min(100.0, 10.0 * math.log10(255.0**2 / mse))


def position_error(dream: np.ndarray, real: np.ndarray, detect: Any) -> float:
    """Distance in px between the player found in each frame; inf when the dream lost it, nan when LaneSim has none."""
    pr = detect(real)
    if pr is None:
        return float("nan")
    pd = detect(dream)
    if pd is None:
        return float("inf")
    return float(math.hypot(pd[0] - pr[0], pd[1] - pr[1]))


def _load(world_model: str | None, device: str) -> Any:
    from lol_dreamer.world_model import DEFAULT_DIR, load_world_model

    if world_model is None and not (DEFAULT_DIR / "config.json").exists():
        raise FileNotFoundError(NO_DEFAULT)
    return load_world_model(world_model, device=device)


def _task(wm: Any, task: str | None) -> str:
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        return task
    t = wm.config.get("task")
    return t if t in TASKS else "farm"


def play_context(lane: Any, player: Any, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reset LaneSim with ``seed`` and let the scripted player play ``c`` frames.

    Returns:
        ``(frames uint8 [C, H, W, 3], actions int64 [C, 9])`` in episode alignment (row t taken
        after frame t; the last row, not taken yet, is a stand placeholder the dream ignores).
    """
    obs, _ = lane.reset(seed=seed)
    frames, actions = [obs], []
    for _ in range(c - 1):
        a = player.act(lane)
        obs, _, term, trunc, _ = lane.step(a)
        if term or trunc:
            raise RuntimeError(f"LaneSim ended within the {c}-frame context; pick another --seed")
        actions.append(a)
        frames.append(obs)
    actions.append(np.array([STAND, 0, 0, 0, 0, 0, 0, 0, 0], np.int64))
    return np.stack(frames), np.stack(actions).astype(np.int64)


def run_demo(
    world_model: str | None = None,
    out: str | Path = "demo",
    frames: int = 160,
    seed: int = 0,
    task: str | None = None,
    device: str = "cpu",
    scale: int | None = None,
    progress: bool = True,
) -> DemoResult:
    """Roll the dream and LaneSim side by side from the same start with the same actions.

    Args:
        world_model: world-model folder (None = the bundled default model).
        out: output folder (created).
        frames: frames to roll after the context (F).
        seed: LaneSim reset seed, dream noise seed and action-sampling seed.
        task: LaneSim task and agent conditioning (default: the world model's task, else farm).
        device: torch device of the world model.
        scale: integer upscaling of the video (default: to about 256 px per side).
        progress: show a progress bar.
    Returns:
        A :class:`DemoResult`.
    """
    from tqdm.auto import tqdm

    from lol_dreamer.envs.dream import DreamEnv
    from lol_dreamer.envs.lane.detector import detect_player
    from lol_dreamer.envs.lane.env import LaneEnv
    from lol_dreamer.envs.lane.scripted import ScriptedPlayer

    if frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    wm = _load(world_model, device)
    task = _task(wm, task)
    c = wm.context_length
    lane = LaneEnv(task=task, res=wm.res, max_steps=c + frames + 1, render_mode="rgb_array")
    player = ScriptedPlayer(task, seed=seed)
    ctx_frames, ctx_actions = play_context(lane, player, c, seed)

    dream = DreamEnv(world_model=wm, task=task, render_mode="rgb_array")
    policy = None
    if wm.has_heads and int(getattr(wm.dynamics.cfg, "n_agent", 0)) > 0:
        from lol_dreamer.policy import load_policy

        policy = load_policy(wm.path, device=device, task=task, seed=seed, world_model=False)
    d_obs, _ = dream.reset(
        seed=seed, options={"start": ctx_frames, "actions": ctx_actions, "task": task}
    )
    real_obs = ctx_frames[-1]

    dreamed, real, psnr, err, taken = [], [], [], [], []
    dream_seconds = 0.0
    ended = None
    for t in tqdm(range(frames), desc="demo", unit="frame", disable=not progress, leave=False):
        a = policy.act(dream) if policy is not None else player.act(lane)
        taken.append(np.asarray(a, np.int64))
        t0 = time.perf_counter()
        d_obs, *_ = dream.step(a)
        dream_seconds += time.perf_counter() - t0
        real_obs, _, term, trunc, _ = lane.step(a)
        dreamed.append(d_obs)
        real.append(real_obs)
        psnr.append(frame_psnr(d_obs, real_obs))
        err.append(position_error(d_obs, real_obs, detect_player))
        if term or trunc:
            if t < frames - 1:
                ended = t + 1
            break
    fps = len(dreamed) / max(dream_seconds, 1e-9)
    result = _write(
        Path(out), np.stack(dreamed), np.stack(real), np.stack(taken), np.array(psnr),
        np.array(err), fps, wm, task, seed, "agent" if policy is not None else "scripted", scale,
    )  # fmt: skip
    if ended is not None:
        print(
            f"LaneSim ended after {ended} frames (the player died or a tower fell); the demo stops there"
        )
    return result


def _write(
    out: Path,
    dreamed: np.ndarray,
    real: np.ndarray,
    actions: np.ndarray,
    psnr: np.ndarray,
    err: np.ndarray,
    fps: float,
    wm: Any,
    task: str,
    seed: int,
    actor: str,
    scale: int | None,
) -> DemoResult:
    from lol_dreamer.io import atomic_write_json
    from lol_dreamer.videoio import side_by_side, upscale, write_video

    out.mkdir(parents=True, exist_ok=True)
    scale = scale or max(1, 256 // wm.res)
    clip = upscale(side_by_side(dreamed, real), scale)
    try:
        video = write_video(out / "demo.mp4", clip, fps=wm.fps)
    except Exception as e:  # an FFmpeg build without an mp4 encoder: fall back to gif
        print(f"mp4 could not be written ({e}); writing a gif instead")
        video = write_video(out / "demo.gif", clip, fps=wm.fps)
    plot = plot_demo(out / "demo.png", psnr, err, wm.res, fps)
    finite = err[np.isfinite(err)]
    report = {
        "world_model": str(wm.path),
        "task": task,
        "seed": seed,
        "actor": actor,
        "context_frames": wm.context_length,
        "frames": len(psnr),
        "dream_fps": fps,
        "actions": actions.tolist(),
        "psnr_db": psnr.tolist(),
        "position_error_px": [None if not np.isfinite(x) else float(x) for x in err],
        "champion_lost": np.isinf(err).tolist(),
        "mean_psnr_db": float(psnr.mean()),
        "mean_position_error_px": float(finite.mean()) if finite.size else None,
        "video": str(video),
        "plot": str(plot),
    }
    js = atomic_write_json(out / "demo.json", report)
    return DemoResult(video, plot, js, len(psnr), fps, psnr, err, actor, dreamed, real, actions)


def plot_demo(path: Path, psnr: np.ndarray, err: np.ndarray, res: int, fps: float) -> Path:
    """Two panels over time: PSNR of the dream against LaneSim, and the player-position error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lol_dreamer.io import atomic_write

    t = np.arange(1, len(psnr) + 1)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(t, psnr, color="tab:blue")
    ax1.set_ylabel("PSNR vs LaneSim (dB)")
    ax1.set_title(f"dream vs real LaneSim, same actions ({fps:.1f} dreamed frames/s)")
    shown = np.where(np.isfinite(err), err, np.nan)
    ax2.plot(t, shown, color="tab:red", label="position error")
    lost = np.isinf(err)
    if lost.any():
        ax2.scatter(t[lost], np.full(lost.sum(), res / 16.0), marker="x", color="black",
                    label="player not found in the dream")  # fmt: skip
    ax2.axhline(res / 16.0, ls="--", color="gray", label=f"coherence threshold ({res / 16:.0f} px)")
    ax2.set_ylabel("player position error (px)")
    ax2.set_xlabel("frame after the context")
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lol-dreamer demo`` (flags: :mod:`lol_dreamer.commands.demo`)."""
    r = run_demo(args.world_model, args.out, args.frames, args.seed, args.task, args.device,
                 args.scale, progress=not args.quiet)  # fmt: skip
    finite = r.position_error[np.isfinite(r.position_error)]
    pos = f"{finite.mean():.1f} px" if finite.size else "n/a"
    print(f"dream FPS: {r.fps:.1f} frames/s (batch 1, dynamics + decoding)")
    print(
        f"Rolled {r.frames} frames with the {r.actor} acting, the same actions in the dream and in LaneSim: "
        f"mean PSNR {r.psnr.mean():.2f} dB, mean player-position error {pos}, player lost in "
        f"{int(np.isinf(r.position_error).sum())} dreamed frames. Video (dream left, LaneSim right): "
        f"{r.video}; plot: {r.plot}; numbers: {r.report}."
    )
    return 0
