"""Write frame sequences to video files: mp4 through PyAV, gif as a fallback format.

Frames are ``uint8 [T, H, W, 3]`` (RGB). PyAV is imported inside :func:`write_video` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lol_dreamer.io import atomic_write


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour integer upscaling.

    Args:
        frames: ``uint8 [..., H, W, 3]``.
        factor: integer ≥ 1.
    Returns:
        ``uint8 [..., H·factor, W·factor, 3]``.
    """
    if factor < 1:
        raise ValueError(f"upscale factor must be ≥ 1, got {factor}")
    if factor == 1:
        return frames
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 2) -> np.ndarray:
    """Place two equally shaped clips ``uint8 [T, H, W, 3]`` next to each other with a white gap.

    Returns:
        ``uint8 [T, H, 2·W + gap, 3]``.
    """
    if left.shape != right.shape:
        raise ValueError(f"clips must have the same shape, got {left.shape} and {right.shape}")
    t, h = left.shape[:2]
    sep = np.full((t, h, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([left, sep, right], axis=2)


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad height and width to even sizes (yuv420p needs them)."""
    h, w = frames.shape[1:3]
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)))
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: float = 20.0) -> Path:
    """Encode ``frames`` to ``path`` atomically; the suffix picks the format.

    ``.mp4`` / ``.mkv`` / ``.mov`` use H.264 (``libx264``, falling back to ``mpeg4`` when the
    FFmpeg build lacks it); ``.gif`` writes an animated GIF.

    Args:
        path: output file.
        frames: ``uint8 [T, H, W, 3]`` RGB.
        fps: frames per second of the file.
    Returns:
        The written path.
    """
    import av

    path = Path(path)
    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("no frames to write")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        codec, fmt, pix = "gif", "gif", "rgb8"
    elif suffix in (".mp4", ".mkv", ".mov"):
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        fmt, pix = suffix[1:], "yuv420p"
        frames = _even(frames)
    else:
        raise ValueError(f"unsupported video suffix {suffix!r}: use .mp4 (or .mkv, .mov) or .gif")
    rate = max(1, round(fps))

    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format=fmt) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = pix
            if codec == "libx264":
                stream.options = {"crf": "18", "preset": "veryfast"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    return atomic_write(path, write)


def read_video(path: str | Path) -> np.ndarray:
    """Decode every frame of a video file to ``uint8 [T, H, W, 3]`` RGB."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
