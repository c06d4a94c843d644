"""``ScriptedPlayer``: a decent, not optimal, demonstrator for each LaneSim task.

It reads the true game state of ``env.unwrapped`` (not pixels). ``skill`` ∈ [0, 1] sets how sloppy it
is: with probability ``epsilon = 0.4·(1 − skill)`` a frame's action is random (uniform movement bin,
each key pressed with probability ``KEY_NOISE``), and it acts on the state ``delay = round(6·(1 − skill))``
frames old (reaction time). ``wander`` > 0 adds bouts of held random movement: on a frame outside a
bout, with probability ``wander`` it starts walking one uniformly drawn direction (one of the 18 bins)
for ``WANDER_FRAMES`` frames, keys pressed only by noise. The brain's movement follows the game
state, so a world model can predict much of it without reading the action; the bouts decorrelate
movement from the state, to give a model reason to follow its actions.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from lol_dreamer.actions import ACTION_NVEC, STAND, TASKS

from .brain import decide

KEY_NOISE = 0.03
WANDER_FRAMES = (4, 20)  # inclusive range of a wander bout's length in frames


class ScriptedPlayer:
    """Plays the blue champion of a ``LaneEnv``.

    Args:
        task: ``farm`` | ``fight`` | ``push``, or ``mixed`` / None to follow the env's current task.
        skill: 1 = no noise and no delay; 0 = 40% random actions and a 6-frame delay.
        seed: seed of the player's own noise generator.
        wander: per-frame probability of starting a bout of held random movement (0 = never; the
            player then draws exactly the random numbers it drew before the option existed).

    Example:
        >>> import gymnasium as gym, lol_dreamer
        >>> env = gym.make("LoLLane-v0", task="farm", max_steps=50)
        >>> bot = ScriptedPlayer("farm", seed=0)
        >>> obs, info = env.reset(seed=0)
        >>> obs, r, term, trunc, info = env.step(bot.act(env))
    """

    def __init__(
        self,
        task: str | None = "farm",
        skill: float = 0.8,
        seed: int | None = None,
        wander: float = 0.0,
    ) -> None:
        if task not in (*TASKS, "mixed", None):
            raise ValueError(f"task must be one of {TASKS}, 'mixed' or None, got {task!r}")
        if not 0.0 <= skill <= 1.0:
            raise ValueError(f"skill must be in [0, 1], got {skill}")
        if not 0.0 <= wander <= 1.0:
            raise ValueError(f"wander must be in [0, 1], got {wander}")
        self.task, self.skill, self.wander = task, skill, wander
        self.epsilon = 0.4 * (1.0 - skill)
        self.delay = round(6 * (1.0 - skill))
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the noise generator and forget per-episode memory."""
        self.rng = np.random.default_rng(seed)
        self.mem: dict = {}
        self.bout_left, self.bout_move = 0, 0

    def noise_action(self) -> np.ndarray:
        """A random action: uniform movement bin, each key pressed with probability ``KEY_NOISE``."""
        a = np.zeros(len(ACTION_NVEC), dtype=np.int64)
        a[0] = self.rng.integers(ACTION_NVEC[0])
        a[1:] = self.rng.random(len(ACTION_NVEC) - 1) < KEY_NOISE
        return a

    def act(self, env: gym.Env) -> np.ndarray:
        """The next action ``int64 [9]`` for ``env`` (any wrapper around a ``LaneEnv``)."""
        lane = env.unwrapped
        game = lane.game
        if game is None:
            raise RuntimeError("reset the environment before asking the scripted player to act")
        task = self.task if self.task in TASKS else TASKS[lane.task]
        if self.wander > 0.0:
            if self.bout_left == 0 and self.rng.random() < self.wander:
                lo, hi = WANDER_FRAMES
                self.bout_left = int(self.rng.integers(lo, hi + 1))
                self.bout_move = int(self.rng.integers(STAND))  # a direction, never STAND
            if self.bout_left > 0:
                self.bout_left -= 1
                a = self.noise_action()
                a[0] = self.bout_move
                return a
        if self.rng.random() < self.epsilon:
            return self.noise_action()
        snap = game.history[max(0, len(game.history) - 1 - self.delay)]
        return decide(snap, 0, task, self.mem)
