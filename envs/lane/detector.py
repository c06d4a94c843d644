"""Find the player champion in a LaneSim frame (real or generated) by its unique colour.

The renderer draws the player last, as a disc of odd diameter in ``PLAYER_COLOUR`` (a colour nothing
else uses), so on a true frame the centroid of that colour is exactly the drawn centre pixel. On a
generated frame colours are approximate: pixels within ``tol`` (max-abs per channel) count, and the
centroid is refined inside a window around the median so stray pixels elsewhere do not pull it.
"""

from __future__ import annotations

import numpy as np

from .render import PLAYER_COLOUR

_COLOUR = np.array(PLAYER_COLOUR, dtype=np.int16)


def detect_player(
    frame: np.ndarray, tol: int = 60, min_pixels: int | None = None
) -> tuple[float, float] | None:
    """Pixel (x, y) = (column, row) of the player's centre, or None when it is not visible.

    Args:
        frame: ``uint8 [H, W, 3]`` frame.
        tol: per-channel tolerance around the player colour.
        min_pixels: fewest matching pixels that count as a detection (default: about half the body
            area at this resolution, at least 3).

    Returns:
        ``(x, y)`` floats in pixel-index coordinates (the centre pixel of a clean disc), or None.

    Example:
        >>> import numpy as np
        >>> f = np.zeros((128, 128, 3), np.uint8); f[39:44, 9:14] = (0, 255, 255)
        >>> detect_player(f)
        (11.0, 41.0)
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 [H, W, 3], got shape {frame.shape}")
    h = frame.shape[0]
    if min_pixels is None:
        r = max(1.0, 3.0 * h / 128.0)
        min_pixels = max(3, int(1.5 * r * r))
    # Cheap pre-filter on the green and blue channels before the exact test.
    g = frame[..., 1]
    ys, xs = np.nonzero(g >= 255 - tol)
    if ys.size == 0:
        return None
    px = frame[ys, xs].astype(np.int16)
    ok = np.abs(px - _COLOUR).max(axis=1) <= tol
    ys, xs = ys[ok], xs[ok]
    if ys.size < min_pixels:
        return None
    my, mx = np.median(ys), np.median(xs)
    win = max(4.0, 6.0 * h / 128.0)
    near = (np.abs(ys - my) <= win) & (np.abs(xs - mx) <= win)
    if near.sum() < min_pixels:
        return None
    return float(xs[near].mean()), float(ys[near].mean())
