"""Real-game evaluation while phase 3 trains: the live policy plays LaneSim (``LoLLane-v0``).

Imagined returns only say how the policy does inside the dream; a reward head can be exploited. So
every ``every`` optimiser steps (and before the first, i.e. the BC prior, and at the last) the
*current* policy head (EMA weights when the run keeps an EMA) acts from real frames through the
run's own world model (:class:`~lol_dreamer.policy.WorldModelFeatures`) for ``episodes`` episodes.
Episode ``i`` resets the env with seed ``1000·i`` (:data:`~lol_dreamer.agents.evaluate.SEED_STRIDE`),
and the action sampling and context noise are seeded the same way, so every evaluation of a run
faces the same start states and the curve compares like with like. The episode runner is
:func:`lol_dreamer.agents.evaluate.evaluate_runner`; the 95 % interval is its Student-t interval over
the ``episodes`` returns (one episode per seed).

Metric keys (:func:`real_metrics`): ``real/return`` (mean), ``real/return_ci95`` (half-width of the
95 % CI; absent with one episode) and ``real/episodes``.

Example:
    >>> from lol_dreamer.policy import load_policy
    >>> real_return(load_policy("runs/bc"), "farm", episodes=2)   # doctest: +SKIP
    {'real/return': 1.5, 'real/return_ci95': 6.35, 'real/episodes': 2}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import nn

from lol_dreamer.agents.evaluate import SEED_STRIDE, PolicyRunner, evaluate_runner

LANESIM_MIN_RES = 32  # the smallest frame LaneSim's renderer draws (envs/lane/render.py)


@dataclass
class RealEvalConfig:
    """How often and how long phase 3 plays the real game (saved as ``config.json["real_eval"]``).

    Attributes:
        every: evaluate every N optimiser steps (plus step 0 and the last step); 0 = never;
            None = ``steps // 4`` when the world model's frames are large enough for LaneSim
            (:data:`LANESIM_MIN_RES`), else never (see :meth:`resolve`).
        episodes: LaneSim episodes per evaluation (env seeds ``1000·i``, i < episodes).
        max_steps: steps per episode before truncation.
        deterministic: act with the policy's mode instead of sampling.
    """

    every: int | None = None
    episodes: int = 2
    max_steps: int = 300
    deterministic: bool = False

    def __post_init__(self) -> None:
        if (self.every is not None and self.every < 0) or self.episodes < 1 or self.max_steps < 1:
            raise ValueError(
                f"real evaluation needs every >= 0, episodes >= 1 and max_steps >= 1, got {self}; "
                "pass --real-eval-every 0 to switch it off"
            )

    def resolve(self, steps: int, res: int) -> RealEvalConfig:
        """This config with ``every`` fixed for a run of ``steps`` steps on a ``res``-px world model.

        Raises:
            ValueError: real evaluation was asked for but LaneSim cannot render ``res`` px frames.
        """
        every = self.every
        if every is None:
            every = max(1, steps // 4) if res >= LANESIM_MIN_RES else 0
        if every > 0 and res < LANESIM_MIN_RES:
            raise ValueError(
                f"the world model sees {res} px frames, but LaneSim renders at least "
                f"{LANESIM_MIN_RES} px, so its policy cannot play the real game; pass "
                "--real-eval-every 0"
            )
        return replace(self, every=every)

    def due(self, step: int, last: int) -> bool:
        """Whether the policy after ``step`` optimiser steps (0 = the prior) is evaluated."""
        every = self.every or 0
        return every > 0 and (step % every == 0 or step == last)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": [SEED_STRIDE * i for i in range(self.episodes)]}


def real_metrics(result: dict[str, Any]) -> dict[str, float]:
    """``real/*`` scalars of an :func:`~lol_dreamer.agents.evaluate.evaluate_runner` result.

    Args:
        result: its dict (``"mean"``, ``"half_width"``, ``"returns"``).
    Returns:
        ``{"real/return", "real/episodes"}`` plus ``"real/return_ci95"`` (CI half-width) when
        there are at least two episodes.
    """
    out: dict[str, float] = {
        "real/return": float(result["mean"]),
        "real/episodes": sum(len(r) for r in result["returns"]),
    }
    if result["half_width"] is not None:
        out["real/return_ci95"] = float(result["half_width"])
    return out


def real_return(
    policy: Any, task: str, episodes: int = 2, max_steps: int = 300, progress: bool = False
) -> dict[str, float]:
    """Play ``episodes`` seeded LaneSim episodes with a frame-acting policy; :func:`real_metrics`.

    Args:
        policy: a :class:`~lol_dreamer.policy.Policy` with a world-model feature extractor (from
            ``load_policy(run)`` or :func:`live_policy`).
        task: LaneSim task (``farm`` | ``fight`` | ``push``).
        episodes: episodes; episode i resets with seed ``1000·i`` (one episode per seed, so the
            interval is over episodes).
        max_steps: truncation.
        progress: show a progress bar.
    Returns:
        ``{"real/return", "real/return_ci95", "real/episodes"}``.
    """
    res = int(policy.features.wm.res)
    result = evaluate_runner(
        PolicyRunner(policy, name="policy"), task=task, seeds=episodes, episodes=1,
        max_steps=max_steps, res=res, progress=progress,
    )  # fmt: skip
    return real_metrics(result)


def live_policy(
    heads: nn.Module, world_model: Any, task: str, mtp_distance: int, deterministic: bool = False
) -> Any:
    """A frame-acting :class:`~lol_dreamer.policy.Policy` around already loaded (training) modules.

    Nothing is copied: the policy reads ``heads``' current weights. Note that
    :class:`~lol_dreamer.policy.Policy` puts ``heads`` in eval mode; the caller restores train mode.

    Args:
        heads: the :class:`~lol_dreamer.models.heads.AgentHeads` being trained.
        world_model: the :class:`~lol_dreamer.world_model.WorldModel` whose tokenizer and dynamics
            turn real frames into agent features.
        task: task name the agent tokens are conditioned on.
        mtp_distance: the policy output layer that acts.
        deterministic: act with the mode.
    """
    from lol_dreamer.actions import TASK_INDEX
    from lol_dreamer.policy import Policy, WorldModelFeatures

    features = WorldModelFeatures(world_model, task=TASK_INDEX[task])
    return Policy(heads, features, mtp_distance=mtp_distance, deterministic=deterministic)


class RealEvaluator:
    """``eval_fn(model, step) -> {"real/…"}`` for the shared loop: the live policy plays LaneSim.

    Args:
        heads: the heads being trained (their policy head acts).
        world_model: the run's world model (features of real frames).
        task: the run's task.
        mtp_distance: the acting distance.
        cfg: episodes, truncation and mode.
    """

    def __init__(
        self, heads: nn.Module, world_model: Any, task: str, mtp_distance: int, cfg: RealEvalConfig
    ) -> None:
        self.heads, self.world_model, self.task = heads, world_model, task
        self.mtp_distance, self.cfg = mtp_distance, cfg

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        policy = live_policy(
            self.heads, self.world_model, self.task, self.mtp_distance, self.cfg.deterministic
        )
        return real_return(policy, self.task, self.cfg.episodes, self.cfg.max_steps)
