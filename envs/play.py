"""``lol-dreamer play``: play the dream (or the real LaneSim, or both side by side) in a pygame window.

Keyboard alone is enough (arrow keys, Q W E R D F, 1, B); the right mouse button held moves toward
the cursor. The mapping lives in :mod:`lol_dreamer.envs.play_input` as a pure function; this module
only turns pygame events into held-key sets and draws frames.

| mode    | left panel                  | right panel |
|---------|-----------------------------|-------------|
| `dream` | the world model's dream     | —           |
| `real`  | LaneSim                     | —           |
| `side`  | LaneSim                     | the dream, started from the real game's first frames and driven by the same actions |

Headless use (tests, CI): set ``SDL_VIDEODRIVER=dummy``, pass ``max_frames`` and post events from
``before_frame``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lol_dreamer.actions import TASKS, noop_action
from lol_dreamer.envs.play_input import CONTROLS, keys_to_action
from lol_dreamer.videoio import upscale, write_video

MODES = ("dream", "real", "side")
GAP = 4  # pixels between the two panels in side mode


@dataclass
class PlayOptions:
    """What to play and how.

    Attributes:
        world_model: world-model folder (``None`` = the bundled default).
        mode: ``dream``, ``real`` or ``side``.
        agent: world-model or agent run folder whose policy head takes over on Tab.
        scale: integer upscaling of each panel.
        fps: frames per second cap (0 = as fast as possible).
        task: the task the dream rewards (and the real game scores).
        seed: first reset seed.
        device: torch device of the world model.
        max_frames: stop after this many loop iterations (``None`` = until Esc / window closed).
        record_dir: where F12 recordings go.
        steps_per_frame: K, denoising steps per dream frame (``None`` = the model's default).
    """

    world_model: str | None = None
    mode: str = "dream"
    agent: str | None = None
    scale: int = 4
    fps: float = 20.0
    task: str = "farm"
    seed: int = 0
    device: str = "cpu"
    max_frames: int | None = None
    record_dir: str = "recordings"
    steps_per_frame: int | None = None


@dataclass
class PlaySummary:
    """What a play session did (returned by :meth:`PlaySession.run`)."""

    frames: int = 0
    steps: int = 0
    resets: int = 0
    total_reward: float = 0.0
    recordings: list[Path] = field(default_factory=list)
    quit_by_user: bool = False


class PlaySession:
    """One play window: environments, held input, UI state and the main loop.

    Args:
        opts: :class:`PlayOptions`.
    """

    def __init__(self, opts: PlayOptions) -> None:
        if opts.mode not in MODES:
            raise ValueError(f"--mode must be one of {MODES}, got {opts.mode!r}")
        if opts.scale < 1:
            raise ValueError(f"--scale must be an integer ≥ 1, got {opts.scale}")
        if opts.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}, got {opts.task!r}")
        self.opts = opts
        self.dream = None
        self.real = None
        if opts.mode in ("dream", "side"):
            from lol_dreamer.envs.dream import DreamEnv

            self.dream = DreamEnv(
                checkpoint=opts.world_model,
                device=opts.device,
                task=opts.task,
                steps_per_frame=opts.steps_per_frame,
            )
        if opts.mode in ("real", "side"):
            import gymnasium as gym

            res = self.dream.res if self.dream is not None else 128
            self.real = gym.make("LoLLane-v0", res=res, task=opts.task).unwrapped
        self.agent = self._load_agent(opts.agent) if opts.agent else None
        # UI state.
        self.held: set[str] = set()
        self.mouse_right = False
        self.mouse_pos: tuple[int, int] = (0, 0)
        self.paused = False
        self.single_step = False
        self.agent_control = False
        self.show_fps = False
        self.recording: list[np.ndarray] | None = None
        self.quit = False
        self.want_reset = False
        self.summary = PlaySummary()
        self._seed = opts.seed
        self._panels: list[np.ndarray] = []
        self._last_action: np.ndarray | None = None
        self._fps_est = 0.0

    # ---------------------------------------------------------------------------------------
    # Environments

    def _load_agent(self, run: str) -> Any:
        """The policy that acts on Tab (``lol_dreamer.policy.load_policy``)."""
        from lol_dreamer.policy import load_policy

        return load_policy(run, device=self.opts.device, task=self.opts.task, seed=self.opts.seed)

    def reset(self) -> None:
        """Reset the environment(s); in side mode the dream starts from the real game's frames."""
        seed = self._seed
        self._seed += 1
        panels = []
        if self.real is not None:
            obs, _ = self.real.reset(seed=seed)
            panels.append(obs)
            if self.dream is not None:
                frames, actions = [obs], []
                for _ in range(self.dream.context_length - 1):
                    a = noop_action()
                    obs, *_ = self.real.step(a)
                    frames.append(obs)
                    actions.append(a)
                actions.append(noop_action())
                start = {"start": np.stack(frames), "actions": np.stack(actions)}
                dobs, _ = self.dream.reset(seed=seed, options=start)
                panels = [obs, dobs]
        else:
            dobs, _ = self.dream.reset(seed=seed)
            panels.append(dobs)
        self._panels = panels
        self._last_action = None
        self.summary.resets += 1
        if self.agent is not None and hasattr(self.agent, "reset"):
            self.agent.reset()

    def _champion_xy(self) -> tuple[float, float]:
        """Screen position (panel pixels) the right-click direction is measured from."""
        from lol_dreamer.envs.lane.detector import detect_player

        frame = self._panels[0]
        found = detect_player(frame)
        if found is not None:
            return float(found[0]), float(found[1])
        return frame.shape[1] / 2.0, frame.shape[0] / 2.0

    def human_action(self) -> np.ndarray:
        """The action from the currently held keys and mouse."""
        mouse = None
        if self.mouse_right:
            cx, cy = self._champion_xy()
            s = self.opts.scale
            mx, my = self.mouse_pos
            mouse = (mx / s - cx, my / s - cy)
        return keys_to_action(self.held, mouse=mouse)

    def _agent_action(self) -> np.ndarray:
        """The agent's action: from the real game's frames when it runs, else from the dream."""
        env = self.real if self.real is not None else self.dream
        return np.asarray(self.agent.act(env, last_action=self._last_action), dtype=np.int64)

    def step(self, action: np.ndarray) -> None:
        """Advance every environment by one frame with the same action; reset on episode end."""
        panels, done = [], False
        reward = 0.0
        if self.real is not None:
            obs, r, term, trunc, _ = self.real.step(action)
            panels.append(obs)
            reward = float(r)
            done |= term or trunc
        if self.dream is not None:
            obs, r, term, trunc, _ = self.dream.step(action)
            panels.append(obs)
            reward = float(r) if self.real is None else reward
            done |= term or trunc
        self._panels = panels
        self._last_action = np.asarray(action, dtype=np.int64)
        self.summary.steps += 1
        self.summary.total_reward += reward
        if done:
            self.want_reset = True

    # ---------------------------------------------------------------------------------------
    # Events and drawing

    def handle_event(self, event: Any) -> None:
        """Update the UI and input state from one pygame event."""
        import pygame

        if event.type == pygame.QUIT:
            self.quit = True
        elif event.type == pygame.KEYDOWN:
            name = pygame.key.name(event.key).lower()
            if event.key == pygame.K_ESCAPE:
                self.quit = True
            elif event.key == pygame.K_p:
                self.paused = not self.paused
            elif event.key == pygame.K_n:
                self.single_step = self.paused
            elif event.key in (pygame.K_RETURN, pygame.K_KP_ENTER):
                self.want_reset = True
            elif event.key == pygame.K_TAB:
                if self.agent is None:
                    print("no --agent given: Tab has nothing to hand control to")
                else:
                    self.agent_control = not self.agent_control
            elif event.key == pygame.K_F1:
                self.show_fps = not self.show_fps
            elif event.key == pygame.K_F12:
                self._toggle_recording()
            else:
                self.held.add(name)
        elif event.type == pygame.KEYUP:
            self.held.discard(pygame.key.name(event.key).lower())
        elif event.type == pygame.MOUSEBUTTONDOWN and event.button == 3:
            self.mouse_right, self.mouse_pos = True, tuple(event.pos)
        elif event.type == pygame.MOUSEBUTTONUP and event.button == 3:
            self.mouse_right = False
        elif event.type == pygame.MOUSEMOTION:
            self.mouse_pos = tuple(event.pos)

    def _toggle_recording(self) -> None:
        if self.recording is None:
            self.recording = []
            print("recording… (F12 to stop)")
            return
        frames, self.recording = self.recording, None
        if not frames:
            return
        out = Path(self.opts.record_dir) / time.strftime("play-%Y%m%d-%H%M%S.mp4")
        path = write_video(out, np.stack(frames), fps=self.opts.fps or 20.0)
        self.summary.recordings.append(path)
        print(f"saved {len(frames)} frames to {path}")

    def compose(self) -> np.ndarray:
        """The window image ``uint8 [H·s, W', 3]``: the panel(s), upscaled, side by side."""
        panels = [upscale(p, self.opts.scale) for p in self._panels]
        if len(panels) == 1:
            return panels[0]
        gap = np.full((panels[0].shape[0], GAP, 3), 255, dtype=np.uint8)
        return np.concatenate([panels[0], gap, panels[1]], axis=1)

    def _status(self) -> str:
        who = "agent" if self.agent_control else "human"
        parts = [who]
        if self.paused:
            parts.append("paused")
        if self.recording is not None:
            parts.append("REC")
        if self.show_fps:
            parts.append(f"{self._fps_est:.1f} fps")
        return "  ".join(parts)

    def run(self, before_frame: Callable[[int], None] | None = None) -> PlaySummary:
        """Open the window and loop until Esc, window close or ``max_frames``.

        Args:
            before_frame: called with the frame index before events are read (tests post events here).
        Returns:
            A :class:`PlaySummary`.
        """
        import pygame

        print(CONTROLS)
        pygame.display.init()
        pygame.font.init()
        try:
            self.reset()
            image = self.compose()
            screen = pygame.display.set_mode((image.shape[1], image.shape[0]))
            pygame.display.set_caption(f"lol-dreamer play ({self.opts.mode})")
            font = pygame.font.Font(None, 18)
            clock = pygame.time.Clock()
            last = time.perf_counter()
            i = 0
            while not self.quit and (self.opts.max_frames is None or i < self.opts.max_frames):
                if before_frame is not None:
                    before_frame(i)
                for event in pygame.event.get():
                    self.handle_event(event)
                if self.quit:
                    self.summary.quit_by_user = True
                    break
                if self.want_reset:
                    self.want_reset = False
                    self.reset()
                elif not self.paused or self.single_step:
                    self.single_step = False
                    action = self._agent_action() if self.agent_control else self.human_action()
                    self.step(action)
                image = self.compose()
                if self.recording is not None:
                    self.recording.append(image)
                screen.blit(pygame.surfarray.make_surface(image.swapaxes(0, 1)), (0, 0))
                text = font.render(self._status(), True, (255, 255, 255), (0, 0, 0))
                screen.blit(text, (2, 2))
                pygame.display.flip()
                now = time.perf_counter()
                self._fps_est = 0.9 * self._fps_est + 0.1 / max(now - last, 1e-6)
                last = now
                if self.opts.fps > 0:
                    clock.tick(self.opts.fps)
                i += 1
            self.summary.frames = i
            if self.recording is not None:
                self._toggle_recording()
        finally:
            pygame.display.quit()
            pygame.font.quit()
        return self.summary

    def screenshot(self) -> np.ndarray:
        """The current window content as ``uint8 [H, W, 3]`` (without the status text)."""
        return self.compose()

    def close(self) -> None:
        for env in (self.dream, self.real):
            if env is not None:
                env.close()


def run(args: Any) -> int:
    """Entry point of ``lol-dreamer play`` (arguments from :mod:`lol_dreamer.commands.play`)."""
    opts = PlayOptions(
        world_model=args.world_model,
        mode=args.mode,
        agent=args.agent,
        scale=args.scale,
        fps=args.fps,
        task=args.task,
        seed=args.seed,
        device=args.device,
        max_frames=args.max_frames,
        record_dir=args.record_dir,
        steps_per_frame=args.steps_per_frame,
    )
    session = PlaySession(opts)
    try:
        s = session.run()
    finally:
        session.close()
    rec = f"; recordings: {', '.join(str(p) for p in s.recordings)}" if s.recordings else ""
    print(
        f"played {s.frames} frames ({s.steps} steps, {s.resets} resets) in {opts.mode} mode; "
        f"total reward {s.total_reward:.3f}{rec}"
    )
    return 0
