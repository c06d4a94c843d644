"""Parallel LaneSim collector: the scripted player's episodes written into an episode dataset.

Each worker process plays whole episodes and writes each one atomically into the dataset folder
(``lol_dreamer.data.write_episode`` with a name the parent reserved); only the parent process
updates ``index.json``, so workers never race on it.

Reproducibility: episode number k of a dataset (``ep_{k:06d}``) is played with seeds derived from
``(seed, k)`` alone, its task is ``TASKS[k % 3]`` when ``task="mixed"``, and its skill is
``skill`` plus a uniform jitter in ``±skill_jitter`` drawn from the same seeds. Collecting into an
existing dataset appends: collecting N episodes and then M more with the same seed produces
exactly the episodes of collecting N + M at once.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lol_dreamer.actions import TASK_INDEX, TASKS, noop_action
from lol_dreamer.data.storage import (
    EPISODES_DIR,
    INDEX_FILE,
    _release,
    add_to_index,
    episode_number,
    read_index,
    reserve_names,
    write_episode,
)

FPS = 20.0


def lane_env(task: str, res: int, max_steps: int):
    """The default environment factory: ``LaneEnv(task, res, max_steps)``."""
    from lol_dreamer.envs.lane.env import LaneEnv

    return LaneEnv(task=task, res=res, max_steps=max_steps, render_mode="rgb_array")


def scripted_player(task: str, skill: float, seed: int, wander: float = 0.0):
    """The default player factory: ``ScriptedPlayer(task, skill, seed, wander)``."""
    from lol_dreamer.envs.lane.scripted import ScriptedPlayer

    return ScriptedPlayer(task, skill=skill, seed=seed, wander=wander)


def episode_plan(
    k: int, *, seed: int, task: str, skill: float, skill_jitter: float
) -> dict[str, Any]:
    """Task, skill and seeds of episode number ``k`` (a pure function of its arguments)."""
    env_seed, player_seed, jitter_seed = np.random.SeedSequence([seed, k]).generate_state(3)
    task_name = TASKS[k % len(TASKS)] if task == "mixed" else task
    jitter = np.random.default_rng(int(jitter_seed)).uniform(-skill_jitter, skill_jitter)
    return {
        "task": task_name,
        "skill": float(np.clip(skill + jitter, 0.0, 1.0)),
        "env_seed": int(env_seed),
        "player_seed": int(player_seed),
    }


def _state_fields(env) -> tuple[str, ...] | None:
    fields = getattr(env, "STATE_FIELDS", None)
    if fields is None and hasattr(env, "state_vector"):
        fields = getattr(sys.modules[type(env).__module__], "STATE_FIELDS", None)
    return tuple(fields) if fields is not None else None


_ENVS: dict[tuple, Any] = {}  # one env per (task, res, max_steps, factory) in each worker


def play_episode(job: dict[str, Any]) -> dict[str, Any]:
    """Play and write one episode (runs in a worker). Returns its index entry and statistics."""
    make_env: Callable = job["make_env"]
    key = (job["task"], job["res"], job["max_steps"], make_env)
    env = _ENVS.get(key)
    if env is None:
        env = _ENVS[key] = make_env(job["task"], job["res"], job["max_steps"])
    player = job["make_player"](job["task"], job["skill"], job["player_seed"])
    fields = _state_fields(env)
    n = job["max_steps"]
    # One row more than actions: the observation after the final action is stored too, with an
    # unlabeled stand action, so the transition into the terminal frame (its reward and the
    # terminal flag) is learnable at MTP distance 0.
    frames = np.empty((n + 1, job["res"], job["res"], 3), np.uint8)
    actions = np.empty((n + 1, 9), np.int64)
    labeled = np.ones(n + 1, bool)
    rewards = np.zeros((n + 1, len(TASKS)), np.float32)
    terminated = np.zeros(n + 1, bool)
    state = np.empty((n + 1, len(fields)), np.float32) if fields else None

    obs, info = env.reset(seed=job["env_seed"])
    t, truncated = 0, False
    while t < n:
        frames[t] = obs  # frames[t]: observation at t
        if state is not None:
            state[t] = env.state_vector(info)  # state at the same instant as frames[t]
        actions[t] = player.act(env)  # action taken after seeing frames[t]
        obs, _, term, trunc, info = env.step(actions[t])
        rewards[t] = info["rewards"]  # reward of that transition
        terminated[t] = term  # episode ended after actions[t]
        t += 1
        if term or trunc:
            truncated = bool(trunc)
            break
    frames[t] = obs  # the final observation: no action follows it
    if state is not None:
        state[t] = env.state_vector(info)
    actions[t] = noop_action()
    labeled[t] = False
    ret = rewards[:t].sum(0)
    meta = {
        "collector": "lol_dreamer.envs.collect",
        "seed": job["seed"],
        "env_seed": job["env_seed"],
        "player_seed": job["player_seed"],
        "skill": job["skill"],
        "wander": job["wander"],
        "max_steps": n,
        "truncated": truncated or not bool(terminated[t - 1]),
        "return": ret.tolist(),
    }
    name = write_episode(
        job["root"],
        frames=frames[: t + 1],
        actions=actions[: t + 1],
        labeled=labeled[: t + 1],
        rewards=rewards[: t + 1],
        task=TASK_INDEX[job["task"]],
        terminated=terminated[: t + 1],
        state=state[: t + 1] if state is not None else None,
        state_fields=fields,
        meta=meta,
        fps=FPS,
        source="lanesim",
        name=job["name"],
        update_index=False,
    )
    record = {
        "name": name,
        "length": t + 1,
        "task": TASK_INDEX[job["task"]],
        "resolution": job["res"],
        "source": "lanesim",
        "labeled_frames": t,
        "has_state": state is not None,
        "has_latents": False,
    }
    return {"entry": record, "length": t + 1, "task": job["task"], "return": ret}


@dataclass
class CollectSummary:
    """What a collection produced."""

    out: Path
    names: list[str]
    frames: int
    seconds: float
    disk_bytes: int
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def episodes(self) -> int:
        return len(self.names)

    def text(self) -> str:
        fps = self.frames / max(self.seconds, 1e-9)
        lines = [
            f"collected {self.episodes} episodes, {self.frames} frames in {self.seconds:.1f} s ({fps:.0f} frames/s) "
            f"→ {self.out} ({self.disk_bytes / 2**20:.1f} MiB on disk in total)",
            f"  {'task':<6} {'episodes':>8} {'mean return':>12}   mean reward vector [{', '.join(TASKS)}]",
        ]
        for task, s in self.per_task.items():
            vec = ", ".join(f"{v:+.3f}" for v in s["mean_rewards"])
            lines.append(f"  {task:<6} {s['episodes']:>8} {s['mean_return']:>12.3f}   [{vec}]")
        lines.append(f"  open it with lol_dreamer.data.open_dataset({str(self.out)!r})")
        return "\n".join(lines)


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _check_out(root: Path, res: int) -> None:
    """Appending is allowed into a dataset of the same resolution; refuse anything else."""
    if not root.exists():
        return
    if not root.is_dir():
        raise ValueError(f"--out {root} is a file; give a dataset folder")
    if (root / INDEX_FILE).exists():
        entries = read_index(root)["episodes"]
        other = sorted({e["resolution"] for e in entries} - {res})
        if other:
            raise ValueError(
                f"{root} holds episodes at {other[0]} px but --res is {res}; samplers need one resolution per "
                f"dataset, so use --res {other[0]} to append or choose another --out"
            )
    elif any(p.name not in (EPISODES_DIR, ".lock") for p in root.iterdir()):
        raise ValueError(
            f"{root} exists and is not a lol-dreamer dataset (no {INDEX_FILE}); choose an empty or new --out"
        )


def collect(
    out: str | Path,
    episodes: int,
    *,
    workers: int = 1,
    res: int = 128,
    task: str = "mixed",
    skill: float = 0.8,
    skill_jitter: float = 0.1,
    max_steps: int = 1000,
    seed: int = 0,
    wander: float = 0.0,
    progress: bool = True,
    start_method: str = "spawn",
    make_env: Callable = lane_env,
    make_player: Callable = scripted_player,
) -> CollectSummary:
    """Collect ``episodes`` scripted-player episodes into the dataset folder ``out`` (appending).

    Args:
        out: dataset folder; created, or appended to when it already holds a dataset of ``res``.
        episodes: number of episodes to add.
        workers: worker processes (1 = play in this process).
        res: frame side in pixels.
        task: ``farm`` | ``fight`` | ``push`` | ``mixed`` (round-robin by episode number).
        skill: scripted player skill in [0, 1]; each episode uses ``skill ± skill_jitter``.
        max_steps: episode cap (truncation), 1000 = 50 s at 20 FPS.
        seed: collection seed; episode k's seeds derive from ``(seed, k)``.
        wander: per-frame probability that the player starts a bout of held random movement
            (:class:`~lol_dreamer.envs.lane.scripted.ScriptedPlayer`); 0 = none. When above 0,
            ``make_player`` is called with ``wander=`` as a keyword.
        progress: show a tqdm bar.
        start_method: multiprocessing start method for the workers.
        make_env, make_player: picklable factories ``(task, res, max_steps) → env`` and
            ``(task, skill, seed) → player`` (default LaneSim and its scripted player).

    Returns:
        A :class:`CollectSummary`.
    """
    if episodes < 1 or workers < 1 or max_steps < 1:
        raise ValueError(
            f"--episodes, --workers and --max-steps must be positive, got {episodes}, {workers}, {max_steps}"
        )
    if task not in (*TASKS, "mixed"):
        raise ValueError(f"--task must be one of {', '.join((*TASKS, 'mixed'))}, got {task!r}")
    if not 0.0 <= skill <= 1.0:
        raise ValueError(f"--skill must be in [0, 1], got {skill}")
    if not 0.0 <= wander <= 1.0:
        raise ValueError(f"--wander must be in [0, 1], got {wander}")
    if wander > 0.0:
        make_player = functools.partial(make_player, wander=wander)
    root = Path(out)
    _check_out(root, res)
    names = reserve_names(root, episodes)
    jobs = []
    for name in names:
        plan = episode_plan(
            episode_number(name), seed=seed, task=task, skill=skill, skill_jitter=skill_jitter
        )
        jobs.append(
            {
                **plan,
                "root": str(root),
                "name": name,
                "res": res,
                "max_steps": max_steps,
                "seed": seed,
                "wander": wander,
            }
            | {"make_env": make_env, "make_player": make_player}
        )

    from tqdm.auto import tqdm

    done: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    bar = tqdm(
        total=episodes, unit="ep", desc=f"collect {task}", disable=not progress, dynamic_ncols=True
    )
    pool = None
    try:
        if workers == 1:
            results = map(play_episode, jobs)
        else:
            pool = mp.get_context(start_method).Pool(min(workers, episodes))
            results = pool.imap_unordered(play_episode, jobs)
        frames = 0
        for r in results:
            add_to_index(root, [r["entry"]])  # only this process writes the index
            done[r["entry"]["name"]] = r
            frames += r["length"]
            bar.update(1)
            bar.set_postfix(frames=frames, fps=f"{frames / (time.perf_counter() - t0):.0f}")
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        for name in names:  # after a failure or ^C: drop reservations and half-written folders
            if name not in done:
                _release(root, name)
                for tmp in (root / EPISODES_DIR).glob(f".{name}.tmp-*"):
                    shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0

    per_task: dict[str, dict[str, Any]] = {}
    for t in TASKS:
        rs = [r for r in done.values() if r["task"] == t]
        if rs:
            mean_vec = np.mean([r["return"] for r in rs], axis=0)
            per_task[t] = {
                "episodes": len(rs),
                "mean_return": float(mean_vec[TASK_INDEX[t]]),
                "mean_rewards": mean_vec.tolist(),
            }
    return CollectSummary(
        out=root,
        names=sorted(done),
        frames=sum(r["length"] for r in done.values()),
        seconds=seconds,
        disk_bytes=_disk_bytes(root),
        per_task=per_task,
    )


def run(args: Any) -> int:
    """``lol-dreamer collect``: parse-free entry point used by :mod:`lol_dreamer.commands.collect`."""
    summary = collect(
        args.out,
        args.episodes,
        workers=args.workers,
        res=args.res,
        task=args.task,
        skill=args.skill,
        skill_jitter=args.skill_jitter,
        max_steps=args.max_steps,
        seed=args.seed,
        wander=args.wander,
        progress=not args.quiet,
        start_method=args.start_method,
    )
    print(summary.text())
    return 0
