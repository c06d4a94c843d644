"""Closed-loop agent evaluation in the real game, LaneSim (``LoLLane-v0``) (SPEC §9).

Every agent plays the same episodes: seed ``s`` (of S) and episode ``e`` (of N) reset the env with
``seed = 1000·s + e``, so random, scripted, BC and PMPO agents face identical starting states
(common random numbers) and their differences are not start-state luck. Agents are never selected
by imagined return; this is the only score that counts.

Confidence intervals: the per-seed mean returns ``m_1..m_S`` (each over N episodes) are treated as
independent draws; the interval is ``mean(m) ± t_{0.975, S−1} · sd(m) / √S`` (Student t, two-sided
95 %). With one seed there is no interval (``null`` in JSON).

An agent is an :class:`AgentRunner`: ``reset(env, first_frame, seed)`` at the start of an episode,
then ``act(frame) → int64 [9]`` per step.

Example:
    >>> res = evaluate_runner(RandomRunner(), task="farm", seeds=3, episodes=2, max_steps=100)
    >>> res["mean"], res["ci95"]                                     # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lol_dreamer.actions import ACTION_NVEC

SEED_STRIDE = 1000


class AgentRunner:
    """An agent that plays LaneSim from frames. Subclasses implement :meth:`reset` and :meth:`act`."""

    name: str = "agent"

    def reset(self, env: Any, first_frame: np.ndarray, seed: int) -> None:
        """Start an episode in ``env`` whose first observation is ``first_frame`` (uint8 ``[H, W, 3]``)."""
        raise NotImplementedError

    def act(self, frame: np.ndarray) -> np.ndarray:
        """The action ``int64 [9]`` for the current observation ``frame``."""
        raise NotImplementedError


class RandomRunner(AgentRunner):
    """Uniformly random actions (each component independently), seeded per episode."""

    name = "random"

    def reset(self, env: Any, first_frame: np.ndarray, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, frame: np.ndarray) -> np.ndarray:
        return np.array([self.rng.integers(n) for n in ACTION_NVEC], dtype=np.int64)


class ScriptedRunner(AgentRunner):
    """LaneSim's scripted player (reads the true game state, not pixels).

    Args:
        task: the task it plays for (``None`` = the env's task).
        skill: 1 = no noise, no delay; the demonstrations are collected with 0.8 by default.
    """

    name = "scripted"

    def __init__(self, task: str | None = None, skill: float = 0.8) -> None:
        self.task, self.skill = task, skill

    def reset(self, env: Any, first_frame: np.ndarray, seed: int) -> None:
        from lol_dreamer.envs.lane.scripted import ScriptedPlayer

        self.env = env
        self.player = ScriptedPlayer(self.task, self.skill, seed=seed)

    def act(self, frame: np.ndarray) -> np.ndarray:
        return self.player.act(self.env)


class PolicyRunner(AgentRunner):
    """A learned :class:`~lol_dreamer.policy.Policy` acting from frames (world-model features).

    Args:
        policy: a policy with a feature extractor (``load_policy(run, world_model=True)``).
        name: row label in the results table.
    """

    def __init__(self, policy: Any, name: str = "agent") -> None:
        if policy.features is None:
            raise ValueError(
                "PolicyRunner needs a policy that acts from frames; load it with world_model=True"
            )
        self.policy, self.name = policy, name

    def reset(self, env: Any, first_frame: np.ndarray, seed: int) -> None:
        import torch

        self.policy.reset()
        self.policy.generator.manual_seed(seed)
        self.policy.features.generator = torch.Generator(device=self.policy.device).manual_seed(
            seed
        )

    def act(self, frame: np.ndarray) -> np.ndarray:
        return np.asarray(self.policy(frame), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Statistics


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (numerical, |error| < 1e-6).

    Example:
        >>> round(student_t_quantile(0.975, 4), 4)
        2.7764
    """
    if df < 1 or not 0.0 < p < 1.0:
        raise ValueError(f"need df >= 1 and 0 < p < 1, got df={df}, p={p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(
        t: float,
    ) -> float:  # 0.5 + ∫_0^t pdf, substituting x = tan(θ)·√df to keep the range finite
        # pdf(x) dx with x = √df·tan θ: c·(cos θ)^(df−1)·√df dθ
        theta = math.atan(t / math.sqrt(df))
        n = 2000
        h = theta / n
        s = 0.0
        for i in range(n + 1):
            w = 1 if i in (0, n) else (4 if i % 2 else 2)
            s += w * math.cos(i * h) ** (df - 1)
        return 0.5 + math.exp(log_c) * math.sqrt(df) * s * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci(per_seed: np.ndarray, level: float = 0.95) -> tuple[float, float | None]:
    """Mean of per-seed means and the t-interval half-width (None with fewer than 2 seeds)."""
    m = np.asarray(per_seed, dtype=np.float64)
    mean = float(m.mean())
    if len(m) < 2:
        return mean, None
    se = float(m.std(ddof=1)) / math.sqrt(len(m))
    return mean, student_t_quantile(0.5 + level / 2, len(m) - 1) * se


# ---------------------------------------------------------------------------------------------
# Rollouts


@dataclass
class EpisodeResult:
    ret: float
    length: int
    terminated: bool
    frames: list[np.ndarray] = field(default_factory=list)


def run_episode(runner: AgentRunner, env: Any, seed: int, record: bool = False) -> EpisodeResult:
    """Play one episode of ``env`` (reset with ``seed``) to termination or truncation."""
    frame, _ = env.reset(seed=seed)
    runner.reset(env, frame, seed)
    frames = [frame] if record else []
    total, steps = 0.0, 0
    while True:
        frame, r, terminated, truncated, _ = env.step(runner.act(frame))
        total += float(r)
        steps += 1
        if record:
            frames.append(frame)
        if terminated or truncated:
            return EpisodeResult(total, steps, bool(terminated), frames)


def evaluate_runner(
    runner: AgentRunner,
    task: str = "farm",
    seeds: int = 3,
    episodes: int = 2,
    max_steps: int = 1000,
    res: int = 128,
    record_first: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Play ``seeds × episodes`` LaneSim episodes and summarise the returns.

    Args:
        runner: the agent.
        task: LaneSim task (``farm`` | ``fight`` | ``push``).
        seeds: S; episodes: N per seed; max_steps: truncation; res: frame side.
        record_first: keep the frames of the first episode (``"frames"``, uint8 ``[T, H, W, 3]``).
        progress: show a tqdm bar.
    Returns:
        ``{"mean", "ci95": [lo, hi] | None, "half_width", "per_seed": [S], "returns": [S][N],
        "lengths": [S][N], "terminated": [S][N]}`` (+ ``"frames"``).
    """
    import gymnasium as gym
    from tqdm import tqdm

    import lol_dreamer  # noqa: F401  (registers LoLLane-v0)

    if seeds < 1 or episodes < 1:
        raise ValueError(
            f"need at least one seed and one episode, got seeds={seeds}, episodes={episodes}"
        )
    env = gym.make("LoLLane-v0", task=task, max_steps=max_steps, res=res)
    returns = np.zeros((seeds, episodes))
    lengths = np.zeros((seeds, episodes), dtype=np.int64)
    terms = np.zeros((seeds, episodes), dtype=bool)
    frames = None
    bar = tqdm(
        total=seeds * episodes, desc=f"eval {runner.name}", disable=not progress, leave=False
    )
    try:
        for s in range(seeds):
            for e in range(episodes):
                rec = record_first and s == 0 and e == 0
                ep = run_episode(runner, env, SEED_STRIDE * s + e, record=rec)
                returns[s, e], lengths[s, e], terms[s, e] = ep.ret, ep.length, ep.terminated
                if rec:
                    frames = np.stack(ep.frames)
                bar.update(1)
    finally:
        bar.close()
        env.close()
    per_seed = returns.mean(axis=1)
    mean, half = mean_ci(per_seed)
    out: dict[str, Any] = {
        "mean": mean,
        "half_width": half,
        "ci95": None if half is None else [mean - half, mean + half],
        "per_seed": per_seed.tolist(),
        "returns": returns.tolist(),
        "lengths": lengths.tolist(),
        "terminated": terms.tolist(),
    }
    if frames is not None:
        out["frames"] = frames
    return out


def format_table(results: dict[str, dict[str, Any]], task: str, seeds: int, episodes: int) -> str:
    """A plain-text table: agent, mean return, 95 % CI, mean episode length."""
    lines = [
        f"LaneSim task={task}: mean return over {seeds} seeds × {episodes} episodes "
        "(95% CI: Student t over per-seed means)",
        f"{'agent':<24} {'mean':>9} {'95% CI':>22} {'length':>8}",
    ]
    for name, r in results.items():
        ci = "n/a (1 seed)" if r["ci95"] is None else f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        length = float(np.mean(r["lengths"]))
        lines.append(f"{name:<24} {r['mean']:>9.3f} {ci:>22} {length:>8.1f}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def _agent_rows(run: str) -> list[tuple[str, str]]:
    """``[(label, run_dir)]``: the agent, then its BC parent when the run is a PMPO run."""
    from pathlib import Path

    from lol_dreamer.checkpoint import load_run_config
    from lol_dreamer.policy import _resolve_path

    cfg = load_run_config(run)
    kind = cfg.get("kind", "agent")
    rows = [(("pmpo" if kind != "agent" else "bc") + f" ({Path(run).name})", run)]
    parent = cfg.get("parent")
    if kind != "agent" and isinstance(parent, str):
        p = _resolve_path(parent, Path(run).parent)
        if (p / "config.json").exists() and load_run_config(p).get("kind") == "agent":
            rows.append((f"bc parent ({p.name})", str(p)))
    return rows


def run(args: Any) -> int:
    """``lol-dreamer eval agent``: evaluate, print the table, write JSON (+ video)."""
    from pathlib import Path

    from lol_dreamer.io import atomic_write_json

    learned: list[AgentRunner] = []
    res = args.res
    if args.agent is not None:
        from lol_dreamer.policy import load_policy

        for label, path in _agent_rows(args.agent):
            pol = load_policy(
                path,
                device=args.device,
                task=args.task,
                mtp_distance=args.mtp_distance,
                deterministic=args.deterministic,
            )
            wm_res = int(pol.features.wm.res)
            if res is not None and res != wm_res:
                raise ValueError(
                    f"--res {res} differs from the agent's world model ({wm_res} px); drop --res"
                )
            res = wm_res
            learned.append(PolicyRunner(pol, name=label))
    baselines: list[AgentRunner] = (
        [] if args.no_baselines else [RandomRunner(), ScriptedRunner(args.task, args.skill)]
    )
    runners = [*baselines, *learned]
    if not runners:
        raise ValueError("nothing to evaluate: pass --agent RUN or drop --no-baselines")
    res = res or 128
    results: dict[str, dict[str, Any]] = {}
    video_frames = None
    # the video shows the learned agent, or the scripted player when there is none
    filmed = learned[0] if learned else runners[-1]
    for r in runners:
        record = not args.no_video and r is filmed
        out = evaluate_runner(
            r,
            args.task,
            args.seeds,
            args.episodes,
            args.max_steps,
            res,
            record_first=record,
            progress=not args.quiet,
        )
        if "frames" in out:
            video_frames = out.pop("frames")
        results[r.name] = out
    default_dir = Path(args.agent) if args.agent else Path(".")
    json_path = Path(args.out) if args.out else default_dir / f"eval_agent_{args.task}.json"
    report = {
        "task": args.task,
        "seeds": args.seeds,
        "episodes": args.episodes,
        "max_steps": args.max_steps,
        "res": res,
        "agent": args.agent,
        "ci": "95% Student t over per-seed mean returns; episode e of seed s uses env seed 1000*s+e",
        "results": results,
    }
    atomic_write_json(json_path, report)
    print(format_table(results, args.task, args.seeds, args.episodes))
    msg = f"wrote {json_path}"
    if video_frames is not None:
        from lol_dreamer.videoio import write_video

        video = Path(args.video) if args.video else json_path.with_suffix(".mp4")
        write_video(video, video_frames, fps=20.0)
        msg += f" and {video} (first episode of {filmed.name})"
    print(msg)
    return 0
