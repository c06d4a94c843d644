"""``LaneEnv``: the LaneSim game behind the Gymnasium API (registered as ``LoLLane-v0``)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lol_dreamer.actions import KEY_NAMES, TASK_INDEX, TASKS, action_space, check_action

from .brain import EnemyBrain
from .game import Game
from .render import Renderer
from .rules import (
    COOLDOWN,
    FPS,
    RECALL_FRAMES,
)

REWARD_SCALE = {"farm": 1.0 / 20.0, "fight": 1.0 / 100.0, "push": 1.0 / 100.0}

STATE_FIELDS: tuple[str, ...] = (
    "x",
    "y",
    "px",
    "py",
    "hp",
    "max_hp",
    "mana",
    "max_mana",
    "gold",
    "level",
    "xp",
    *(f"cd_{k}" for k in KEY_NAMES),
    "potions",
    "recall",
    "shield",
    "dead",
    "enemy_x",
    "enemy_y",
    "enemy_px",
    "enemy_py",
    "enemy_hp",
    "enemy_max_hp",
    "enemy_dead",
    "tower_blue_hp",
    "tower_red_hp",
    "n_ally_minions",
    "n_enemy_minions",
    "time",
)


class LaneEnv(gym.Env):
    """LaneSim: one lane, two towers, minion waves, the player (blue) against a scripted champion (red).

    ## Action space

    ``MultiDiscrete([19, 2, 2, 2, 2, 2, 2, 2, 2])`` (``lol_dreamer.actions.action_space()``):

    | index | name | values |
    |-------|------|--------|
    | 0 | movement | 0..17: move toward k·20° (0° = screen right, screen up = +90°); 18: stand and auto-attack the nearest enemy unit in range (champion, minion or tower; 11 units, every 0.9 s) |
    | 1 | Q | skillshot in the facing direction (first enemy unit hit; mana 40, 5 s) |
    | 2 | W | shield (mana 50, 12 s) |
    | 3 | E | dash 16 units in the facing direction (mana 40, 9 s) |
    | 4 | R | area ultimate, radius 16 around the champion (mana 100, 35 s) |
    | 5 | D | flash 20 units in the facing direction (40 s) |
    | 6 | F | heal (30 s) |
    | 7 | item | potion: 150 HP over 5 s, limited charges (3, refilled by recall) |
    | 8 | B | recall: 4 s channel, cancelled by moving, casting or damage; teleports home and heals |

    ## Observation space

    ``Box(0, 255, (res, res, 3), uint8)``: the rendered frame. The top ``res − round(12·res/64)`` rows
    are the lane (fixed camera, or 2× zoom on the player with ``camera="follow"``), the bottom rows
    the HUD (ability icons darkened by remaining cooldown, level, gold, HP and mana bars).

    ## Rewards

    ``info["rewards"]`` is ``float32 [3]`` in ``TASKS`` order; the scalar reward is the episode
    task's entry.

    | task | id | reward per step |
    |------|----|-----------------|
    | farm | 0 | gold from the player's last hits / 20 (about 1 per minion) |
    | fight | 1 | (HP damage dealt to the enemy champion − HP damage taken from anything) / 100 |
    | push | 2 | HP damage the player dealt to the enemy tower / 100 (tower HP 2000) |

    ## Episode end

    | condition | flag |
    |-----------|------|
    | the player dies (task ``fight`` only) | terminated |
    | either tower is destroyed | terminated |
    | ``max_steps`` steps (default 1000 = 50 s at 20 FPS) | truncated |

    ## Starting state

    ``reset`` draws a mid-game snapshot from ``np_random``: levels 1–7, gold, HP/mana fractions,
    some cooldowns, potion charges, tower HP, champion and wave positions along the lane. Pass
    ``options={"randomize": False}`` for a fresh level-1 lane, and ``options={"task": name}`` to
    override the task for this episode.

    ## Info

    ``rewards``, ``task`` (int id) and ``state``: a flat dict with every name in ``STATE_FIELDS``
    (cooldowns ``cd_*`` as the fraction of the cooldown remaining; ``px``/``py`` the player's centre
    pixel as column/row, exactly what ``detector.detect_player`` reads, and −1 while the player is
    dead; ``enemy_px``/``enemy_py`` may lie outside the frame with the follow camera), plus
    ``cooldowns`` (8 fractions), ``cooldowns_s`` (8 seconds) and ``recall_progress`` in [0, 1].
    ``LaneEnv.state_vector(info)`` flattens it to ``float32 [len(STATE_FIELDS)]``.

    ## The game

    Waves of 3 melee + 2 ranged minions leave both bases every 15 s, walk the lane and fight
    (minions prefer minions to champions, and deal champions half damage). Towers (2000 HP,
    range 17) shoot the enemy champion that just hit their own champion, else the nearest enemy
    minion, else an enemy champion in range, for 180 damage a second to champions. Gold: 21 per
    melee and 14 per ranged last hit, 300 per kill; xp from minions dying nearby levels the
    champion (HP, mana, attack, ability damage). Death costs 4 + 1.5·level seconds; the fountain
    heals; respawning restores at least one potion charge. The enemy champion farms and fights back
    when hit (``brain.EnemyBrain``, 10% noise, 3-frame delay).

    Args:
        task: ``farm`` | ``fight`` | ``push`` | ``mixed`` (a task drawn per reset).
        res: frame side in pixels.
        max_steps: truncation limit.
        render_mode: ``rgb_array`` (default), ``human`` (pygame window) or None.
        camera: ``fixed`` or ``follow``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "human"], "render_fps": FPS}

    def __init__(
        self,
        task: str = "farm",
        res: int = 128,
        max_steps: int = 1000,
        render_mode: str | None = "rgb_array",
        camera: str = "fixed",
    ) -> None:
        if task not in (*TASKS, "mixed"):
            raise ValueError(f"task must be one of {(*TASKS, 'mixed')}, got {task!r}")
        if render_mode not in (None, "rgb_array", "human"):
            raise ValueError(
                f"render_mode must be None, 'rgb_array' or 'human', got {render_mode!r}"
            )
        if max_steps < 1:
            raise ValueError(f"max_steps must be positive, got {max_steps}")
        self.task_name = task
        self.task = TASK_INDEX.get(task, 0)
        self.res, self.max_steps, self.render_mode = res, max_steps, render_mode
        self.renderer = Renderer(res, camera)
        self.observation_space = spaces.Box(0, 255, (res, res, 3), np.uint8)
        self.action_space = action_space()
        self.game: Game | None = None
        self.steps = 0
        self._frame: np.ndarray | None = None
        self._window = None
        self._clock = None

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        task = options.get("task", self.task_name)
        if task == "mixed":
            task = TASKS[int(self.np_random.integers(len(TASKS)))]
        if task not in TASKS:
            raise ValueError(f"options['task'] must be one of {TASKS} or 'mixed', got {task!r}")
        self.task = TASK_INDEX[task]
        self.game = Game(
            self.np_random, randomize=bool(options.get("randomize", True)), enemy_brain=EnemyBrain()
        )
        self.steps = 0
        info = self._info(np.zeros(len(TASKS), np.float32))
        self._frame = self.renderer.render(self.game)
        if self.render_mode == "human":
            self._show()
        return self._frame.copy(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        rewards, terminated, truncated, info = self.advance(action)
        self._frame = self.renderer.render(self.game)
        if self.render_mode == "human":
            self._show()
        return self._frame.copy(), float(rewards[self.task]), terminated, truncated, info

    def advance(self, action: np.ndarray) -> tuple[np.ndarray, bool, bool, dict[str, Any]]:
        """Advance the game one step without drawing a frame (``step`` = ``advance`` + render).

        Returns:
            ``(rewards float32 [3], terminated, truncated, info)``.
        """
        if self.game is None:
            raise RuntimeError("call reset() before step()")
        a = check_action(action)
        g = self.game
        g.step(a)
        self.steps += 1
        p = g.champs[0]
        rewards = np.array(
            [
                p.lasthit_gold * REWARD_SCALE["farm"],
                (p.dealt - p.taken) * REWARD_SCALE["fight"],
                p.tower_dmg * REWARD_SCALE["push"],
            ],
            dtype=np.float32,
        )
        terminated = bool(g.tower_destroyed or (self.task == TASK_INDEX["fight"] and not p.alive))
        truncated = bool(self.steps >= self.max_steps and not terminated)
        return rewards, terminated, truncated, self._info(rewards)

    def render(self) -> np.ndarray | None:
        """The current frame (``rgb_array``), or None after drawing it to the window (``human``)."""
        if self._frame is None:
            raise RuntimeError("call reset() before render()")
        if self.render_mode == "human":
            self._show()
            return None
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        return None

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = None

    # ------------------------------------------------------------------ state
    def _info(self, rewards: np.ndarray) -> dict[str, Any]:
        g = self.game
        p, e = g.champs
        px, py = self.renderer.player_pixel(g)
        if e.alive:
            ex, ey = self.renderer.to_pixel(e.x, e.y, self.renderer.offset(g))
        else:
            ex, ey = -1, -1
        cds = [c / m for c, m in zip(p.cd, COOLDOWN)]
        n_blue = int((g.m_alive & (g.m_team == 0)).sum())
        state = {
            "x": p.x,
            "y": p.y,
            "px": px,
            "py": py,
            "hp": p.hp,
            "max_hp": p.max_hp,
            "mana": p.mana,
            "max_mana": p.max_mana,
            "gold": float(p.gold),
            "level": float(p.level),
            "xp": p.xp,
            **{f"cd_{k}": v for k, v in zip(KEY_NAMES, cds)},
            "potions": float(p.potions),
            "recall": p.recall_t / RECALL_FRAMES,
            "shield": p.shield,
            "dead": float(not p.alive),
            "enemy_x": e.x,
            "enemy_y": e.y,
            "enemy_px": float(ex),
            "enemy_py": float(ey),
            "enemy_hp": e.hp,
            "enemy_max_hp": e.max_hp,
            "enemy_dead": float(not e.alive),
            "tower_blue_hp": g.tower_hp[0],
            "tower_red_hp": g.tower_hp[1],
            "n_ally_minions": float(n_blue),
            "n_enemy_minions": float(int(g.m_alive.sum()) - n_blue),
            "time": g.frame / FPS,
            "cooldowns": cds,
            "cooldowns_s": [c / FPS for c in p.cd],
            "recall_progress": p.recall_t / RECALL_FRAMES,
        }
        return {"rewards": rewards.copy(), "task": self.task, "state": state}

    @staticmethod
    def state_vector(info: dict[str, Any]) -> np.ndarray:
        """``float32 [len(STATE_FIELDS)]``: the flat per-frame state stored beside each frame."""
        s = info["state"]
        return np.array([s[f] for f in STATE_FIELDS], dtype=np.float32)

    # ------------------------------------------------------------------ human rendering
    def _show(self) -> None:
        import pygame

        scale = max(1, 512 // self.res)
        if self._window is None:
            pygame.init()
            pygame.display.init()
            self._window = pygame.display.set_mode((self.res * scale, self.res * scale))
            self._clock = pygame.time.Clock()
        surf = pygame.surfarray.make_surface(np.transpose(self._frame, (1, 0, 2)))
        self._window.blit(pygame.transform.scale(surf, self._window.get_size()), (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.metadata["render_fps"])
