"""Take a real X11 screenshot of a ``lol-dreamer play`` window (run under Xvfb).

Holds the up and right arrows, turns on the FPS overlay, and after ``--frames`` frames grabs the
window from the X server (Pillow's ``ImageGrab`` over XCB), not from pygame's back buffer.

Example (the command behind docs/play.png):
    SDL_VIDEODRIVER=x11 SDL_VIDEO_WINDOW_POS=0,0 xvfb-run -a -s "-screen 0 1024x768x24" \\
        python docs/play_screenshot.py --world-model WM --mode side --out docs/play.png
"""

from __future__ import annotations

import argparse
import os

import pygame
from PIL import ImageGrab

from lol_dreamer.envs.play import PlayOptions, PlaySession


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world-model", required=True, help="world-model folder")
    p.add_argument("--mode", default="side", choices=("dream", "real", "side"))
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--frames", type=int, default=40, help="frames to play before the screenshot")
    p.add_argument("--out", default="docs/play.png")
    args = p.parse_args()
    session = PlaySession(
        PlayOptions(
            world_model=args.world_model,
            mode=args.mode,
            scale=args.scale,
            fps=20,
            max_frames=args.frames + 1,
        )
    )

    def before(i: int) -> None:
        if i == 0:
            for key in (pygame.K_UP, pygame.K_RIGHT, pygame.K_F1):
                pygame.event.post(
                    pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0)
                )
        if i == args.frames:
            w, h = pygame.display.get_surface().get_size()
            x, y = (int(v) for v in os.environ.get("SDL_VIDEO_WINDOW_POS", "0,0").split(","))
            ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=os.environ["DISPLAY"]).save(args.out)
            print(f"saved {args.out} ({w}x{h})")

    session.run(before_frame=before)
    session.close()


if __name__ == "__main__":
    main()
