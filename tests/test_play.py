"""Play: the pure key → action mapping, and headless pygame sessions driven by injected events."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pygame
import pytest
from worldmodel_fixture import make_world_model

from lol_dreamer.actions import KEY_INDEX, STAND, bin_to_unit, direction_to_bin
from lol_dreamer.cli import main
from lol_dreamer.envs.play import PlayOptions, PlaySession
from lol_dreamer.envs.play_input import CONTROLS, keys_to_action
from lol_dreamer.videoio import read_video

ARROW_VEC = {"right": (1, 0), "up": (0, 1), "left": (-1, 0), "down": (0, -1)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_world_model(tmp_path_factory.mktemp("play") / "wm", heads=True)


def _angle_error(k: int, dx: float, dy: float) -> float:
    ux, uy = bin_to_unit(k)
    a = math.degrees(math.atan2(uy, ux) - math.atan2(dy, dx)) % 360.0
    return min(a, 360.0 - a)


@pytest.mark.parametrize(
    "keys",
    [
        ("right",),
        ("up",),
        ("left",),
        ("down",),
        ("up", "right"),
        ("up", "left"),
        ("down", "left"),
        ("down", "right"),
    ],
)
def test_arrow_keys_pick_the_nearest_bin(keys):
    dx = sum(ARROW_VEC[k][0] for k in keys)
    dy = sum(ARROW_VEC[k][1] for k in keys)
    for names in itertools.permutations(keys):
        a = keys_to_action(set(names))
        assert a[0] == direction_to_bin(dx, dy)
        assert _angle_error(int(a[0]), dx, dy) <= 10.0
        assert a.dtype == np.int64 and a.shape == (9,) and not a[1:].any()


def test_exact_bins_and_cancelling_arrows():
    assert keys_to_action({"right"})[0] == 0 and keys_to_action({"left"})[0] == 9
    assert keys_to_action(set())[0] == STAND
    assert keys_to_action({"left", "right"})[0] == STAND
    assert keys_to_action({"up", "down", "left"})[0] == 9


def test_ability_item_recall_keys_and_mapping_input():
    a = keys_to_action({"Q", "w", "e", "r", "d", "f", "1", "b"})
    assert a[0] == STAND and a[1:].tolist() == [1] * 8
    a = keys_to_action({"q": True, "b": True, "up": False, "x": True})
    assert a[0] == STAND and a[KEY_INDEX["Q"]] == 1 and a[KEY_INDEX["B"]] == 1 and a[1:].sum() == 2


def test_right_mouse_moves_toward_the_cursor_and_overrides_arrows():
    # Cursor up-right of the champion in screen coordinates (y grows downwards).
    a = keys_to_action({"left", "q"}, mouse=(10.0, -10.0))
    assert a[0] == direction_to_bin(1, 1) == 2 and a[KEY_INDEX["Q"]] == 1
    assert keys_to_action(set(), mouse=(0.0, 20.0))[0] == direction_to_bin(0, -1)
    assert keys_to_action(set(), mouse=(-30.0, 1.0))[0] == 9
    assert keys_to_action(set(), mouse=(0.0, 0.0))[0] == STAND


def _key(kind: int, key: int) -> pygame.event.Event:
    return pygame.event.Event(kind, key=key, mod=0, unicode="", scancode=0)


def test_headless_session_pause_step_reset_quit(folder, capsys):
    session = PlaySession(PlayOptions(world_model=str(folder), fps=0, max_frames=50, scale=2))
    taken: list[np.ndarray] = []
    real_step = session.step

    def record(action):
        taken.append(action.copy())
        real_step(action)

    session.step = record
    script = {
        1: [_key(pygame.KEYDOWN, pygame.K_UP), _key(pygame.KEYDOWN, pygame.K_q)],
        3: [_key(pygame.KEYUP, pygame.K_UP), _key(pygame.KEYUP, pygame.K_q)],
        4: [_key(pygame.KEYDOWN, pygame.K_p)],
        6: [_key(pygame.KEYDOWN, pygame.K_n)],
        7: [_key(pygame.KEYDOWN, pygame.K_p)],
        8: [_key(pygame.KEYDOWN, pygame.K_RETURN)],
        9: [_key(pygame.KEYDOWN, pygame.K_F1)],
        10: [_key(pygame.KEYDOWN, pygame.K_ESCAPE)],
    }

    def before(i: int) -> None:
        for e in script.get(i, []):
            pygame.event.post(e)

    summary = session.run(before_frame=before)
    # Steps at frames 0-3, the single step at 6, 7 (unpaused) and 9; 4-5 paused, 8 resets.
    assert summary.steps == 7 and len(taken) == 7
    assert summary.resets == 2 and summary.quit_by_user and summary.frames == 10
    up = direction_to_bin(0, 1)
    assert [int(a[0]) for a in taken] == [STAND, up, up, STAND, STAND, STAND, STAND]
    assert [int(a[KEY_INDEX["Q"]]) for a in taken] == [0, 1, 1, 0, 0, 0, 0]
    assert session.show_fps and "fps" in session._status()
    assert session.compose().shape == (32, 32, 3)
    assert "arrow keys" in capsys.readouterr().out


def test_mouse_events_and_tab_without_agent(folder, monkeypatch):
    session = PlaySession(PlayOptions(world_model=str(folder), fps=0, max_frames=3, scale=2))
    monkeypatch.setattr(session, "_champion_xy", lambda: (8.0, 8.0))
    taken: list[np.ndarray] = []
    real_step = session.step
    session.step = lambda a: (taken.append(a.copy()), real_step(a))

    def before(i: int) -> None:
        if i == 0:
            # Cursor at panel pixel (14, 2): right of and above the champion at (8, 8).
            pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=3, pos=(28, 4)))
            pygame.event.post(_key(pygame.KEYDOWN, pygame.K_TAB))
        if i == 2:
            pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, button=3, pos=(28, 4)))

    session.run(before_frame=before)
    assert not session.agent_control
    assert [int(a[0]) for a in taken] == [direction_to_bin(6, 6)] * 2 + [STAND]


def test_recording_writes_an_mp4(folder, tmp_path):
    session = PlaySession(
        PlayOptions(world_model=str(folder), fps=0, max_frames=6, scale=2, record_dir=str(tmp_path))
    )

    def before(i: int) -> None:
        if i in (1, 4):
            pygame.event.post(_key(pygame.KEYDOWN, pygame.K_F12))

    summary = session.run(before_frame=before)
    assert len(summary.recordings) == 1 and summary.recordings[0].suffix == ".mp4"
    video = read_video(summary.recordings[0])
    assert video.shape[0] == 3 and video.shape[1:3] == (32, 32)


def test_side_mode_starts_the_dream_from_the_real_game(tmp_path):
    folder = make_world_model(tmp_path / "wm32", res=32)
    session = PlaySession(
        PlayOptions(world_model=str(folder), mode="side", fps=0, max_frames=3, scale=1)
    )
    summary = session.run()
    assert summary.steps == 3
    image = session.compose()
    assert image.shape == (32, 32 * 2 + 4, 3)
    assert len(session._panels) == 2


def test_cli_play_runs_headless(folder, capsys):
    assert (
        main(
            [
                "play",
                "--world-model",
                str(folder),
                "--max-frames",
                "3",
                "--fps",
                "0",
                "--scale",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert CONTROLS.splitlines()[0] in out and "played 3 frames" in out
    assert (
        main(
            [
                "play",
                "--world-model",
                str(folder),
                "--mode",
                "real",
                "--max-frames",
                "2",
                "--fps",
                "0",
            ]
        )
        == 0
    )


def test_tab_hands_control_to_the_agent(folder, monkeypatch):
    session = PlaySession(
        PlayOptions(world_model=str(folder), agent=str(folder), fps=0, max_frames=4, scale=1)
    )
    calls: list[np.ndarray] = []
    real_act = session.agent.act

    def act(env, last_action=None):
        a = real_act(env, last_action=last_action)
        calls.append(a)
        return a

    monkeypatch.setattr(session.agent, "act", act)
    taken: list[np.ndarray] = []
    real_step = session.step
    session.step = lambda a: (taken.append(a.copy()), real_step(a))

    def before(i: int) -> None:
        if i == 2:
            pygame.event.post(_key(pygame.KEYDOWN, pygame.K_TAB))

    session.run(before_frame=before)
    assert session.agent_control and len(calls) == 2
    assert [int(a[0]) for a in taken[:2]] == [STAND, STAND]
    for a, c in zip(taken[2:], calls):
        np.testing.assert_array_equal(a, c)
