"""Ingest real recordings: a video (mp4/mkv via PyAV) plus an optional per-frame CSV → one episode.

Frames are centre-cropped to a square and resized to the model resolution. Without a CSV the
episode is unlabeled (``labeled`` all False, actions stand / no keys), which the tokenizer and the
dynamics model train on with actions masked. The CSV columns are documented in
``docs/data_format.md`` and in :data:`CSV_COLUMNS`.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lol_dreamer.actions import ACTION_DIM, KEY_NAMES, N_MOVE, STAND, TASK_INDEX, TASKS
from lol_dreamer.data.storage import write_episode

REWARD_COLUMNS = tuple(f"reward_{t}" for t in TASKS)
CSV_COLUMNS: tuple[str, ...] = ("frame", "move", *KEY_NAMES, *REWARD_COLUMNS, "terminated")
REQUIRED_COLUMNS = ("frame", "move")


@dataclass
class Labels:
    """Per-frame labels parsed from a CSV, indexed by source frame number."""

    rows: dict[
        int, tuple[np.ndarray, np.ndarray, bool]
    ]  # frame -> (action[9], reward[3], terminated)
    max_frame: int
    row_of: dict[int, int]  # frame -> CSV line number (for error messages)


def _parse_int(value: str, path: Path, line: int, col: str, lo: int, hi: int) -> int:
    try:
        v = int(value.strip())
    except ValueError:
        raise ValueError(
            f"{path} line {line}, column {col!r}: {value!r} is not an integer"
        ) from None
    if not lo <= v <= hi:
        raise ValueError(f"{path} line {line}, column {col!r}: {v} is out of range {lo}..{hi}")
    return v


def read_actions_csv(path: str | os.PathLike) -> Labels:
    """Parse and validate an actions/rewards CSV.

    Header required. ``frame`` (0-based decoded-frame index) and ``move`` (0..17 directions,
    18 = stand) are required; key columns ``Q W E R D F item B`` (0/1), ``reward_farm``,
    ``reward_fight``, ``reward_push`` (float) and ``terminated`` (0/1) are optional and default
    to 0. Frames without a row are stored unlabeled.

    Raises:
        ValueError: naming the file, line and column of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"actions CSV {path} does not exist")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty; it needs a header line: {','.join(CSV_COLUMNS)}")
        header = [h.strip() for h in header]
        unknown = [h for h in header if h not in CSV_COLUMNS]
        if unknown:
            raise ValueError(
                f"{path} line 1: unknown column(s) {unknown}; allowed columns are {','.join(CSV_COLUMNS)} "
                f"(the header line is required)"
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path} line 1: missing required column(s) {missing}; the header must name at least frame,move"
            )
        dup = {h for h in header if header.count(h) > 1}
        if dup:
            raise ValueError(f"{path} line 1: duplicated column(s) {sorted(dup)}")
        col = {h: i for i, h in enumerate(header)}
        rows: dict[int, tuple[np.ndarray, np.ndarray, bool]] = {}
        row_of: dict[int, int] = {}
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not v.strip() for v in rec):
                continue
            if len(rec) != len(header):
                raise ValueError(
                    f"{path} line {line}: {len(rec)} values but the header has {len(header)} columns"
                )
            frame = _parse_int(rec[col["frame"]], path, line, "frame", 0, 2**40)
            if frame in rows:
                raise ValueError(
                    f"{path} line {line}, column 'frame': frame {frame} already given on line {row_of[frame]}"
                )
            action = np.zeros(ACTION_DIM, np.int64)
            action[0] = _parse_int(rec[col["move"]], path, line, "move", 0, N_MOVE - 1)
            for k, key in enumerate(KEY_NAMES):
                if key in col:
                    action[1 + k] = _parse_int(rec[col[key]], path, line, key, 0, 1)
            reward = np.zeros(len(TASKS), np.float32)
            for k, name in enumerate(REWARD_COLUMNS):
                if name in col:
                    try:
                        reward[k] = float(rec[col[name]])
                    except ValueError:
                        raise ValueError(
                            f"{path} line {line}, column {name!r}: {rec[col[name]]!r} is not a number"
                        ) from None
                    if not np.isfinite(reward[k]):
                        raise ValueError(
                            f"{path} line {line}, column {name!r}: reward must be finite"
                        )
            term = (
                bool(_parse_int(rec[col["terminated"]], path, line, "terminated", 0, 1))
                if "terminated" in col
                else False
            )
            rows[frame] = (action, reward, term)
            row_of[frame] = line
    if not rows:
        raise ValueError(
            f"{path} has a header but no rows; leave out --actions to ingest the video unlabeled"
        )
    return Labels(rows=rows, max_frame=max(rows), row_of=row_of)


def center_crop_resize(frame: np.ndarray, res: int) -> np.ndarray:
    """Centre-crop ``uint8 [H, W, 3]`` to a square and resize to ``[res, res, 3]`` (area filter)."""
    import torch
    import torch.nn.functional as F

    h, w = frame.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = frame[y0 : y0 + s, x0 : x0 + s]
    if s == res:
        return np.ascontiguousarray(crop)
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
    mode = "area" if s > res else "bilinear"
    y = F.interpolate(
        x, size=(res, res), mode=mode, **({} if mode == "area" else {"align_corners": False})
    )
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _scaled_size(w: int, h: int, res: int) -> tuple[int, int]:
    """Size that keeps the aspect ratio and makes the short side ``res``."""
    if w <= h:
        return res, max(res, round(h * res / w))
    return max(res, round(w * res / h)), res


def iter_video_frames(path: str | os.PathLike, res: int):
    """Yield ``uint8 [res, res, 3]`` frames decoded from a video, plus the stream's facts first.

    The first item is a dict (fps, width, height, codec); frames follow. Decoding and downscaling
    run in FFmpeg (PyAV ``reformat`` with an area filter), then the centre crop is taken.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise ValueError(
            f"cannot read video {path}: {e}; is it an mp4/mkv file that FFmpeg can decode?"
        ) from e
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
        yield {
            "fps": float(rate) if rate else None,
            "width": w,
            "height": h,
            "codec": stream.codec_context.name,
        }
        sw, sh = _scaled_size(w, h, res)
        try:
            for frame in container.decode(stream):
                img = frame.reformat(
                    width=sw, height=sh, format="rgb24", interpolation="AREA"
                ).to_ndarray()
                yield center_crop_resize(img, res)
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode video {path}: {e}") from e


def ingest_video(
    video: str | os.PathLike,
    out: str | os.PathLike,
    *,
    actions_csv: str | os.PathLike | None = None,
    res: int = 128,
    task: str | int = "farm",
    max_frames: int | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Decode a video (and optional CSV) into one episode of the dataset at ``out``.

    Args:
        video: an mp4/mkv (anything FFmpeg decodes).
        out: dataset folder (created or appended to).
        actions_csv: per-frame actions/rewards CSV (see :func:`read_actions_csv`); None = unlabeled.
        res: square output resolution.
        task: task name or id stored with the episode.
        max_frames: keep only the first N decoded frames.
        meta: extra free-form metadata.

    Returns:
        ``(episode_name, summary)`` where summary holds frames, labeled frames, fps and source size.
    """
    task_id = TASK_INDEX[task] if isinstance(task, str) and task in TASK_INDEX else task
    if not isinstance(task_id, int) or not 0 <= task_id < len(TASKS):
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if res < 8:
        raise ValueError(f"--res must be at least 8 pixels, got {res}")
    labels = read_actions_csv(actions_csv) if actions_csv is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames_iter = iter_video_frames(video, res)
    info = next(frames_iter)
    # Frames stream to a scratch file in the dataset folder (no whole video in memory), then the
    # writer copies them into the episode atomically.
    scratch = Path(tempfile.mkdtemp(dir=out, prefix=".ingest-"))
    try:
        raw_path = scratch / "frames.raw"
        n = 0
        with open(raw_path, "wb") as raw:
            for img in frames_iter:
                raw.write(img.tobytes())
                n += 1
                if max_frames is not None and n >= max_frames:
                    break
        if n == 0:
            raise ValueError(f"video {video} decoded to zero frames")
        frames = np.memmap(raw_path, dtype=np.uint8, mode="r", shape=(n, res, res, 3))
        actions = np.tile(np.array([STAND] + [0] * (ACTION_DIM - 1), np.int64), (n, 1))
        labeled = np.zeros(n, bool)
        rewards = np.zeros((n, len(TASKS)), np.float32)
        terminated = np.zeros(n, bool)
        if labels is not None:
            if labels.max_frame >= n and max_frames is None:
                line = labels.row_of[labels.max_frame]
                raise ValueError(
                    f"{actions_csv} line {line}, column 'frame': frame {labels.max_frame} but the video has only {n} frames (0..{n - 1})"
                )
            for fr, (a, r, term) in labels.rows.items():
                if fr < n:
                    actions[fr], rewards[fr], terminated[fr], labeled[fr] = a, r, term, True
        record = {
            "video": str(Path(video).name),
            "source_width": info["width"],
            "source_height": info["height"],
            "codec": info["codec"],
            "actions_csv": str(Path(actions_csv).name) if actions_csv is not None else None,
            **(meta or {}),
        }
        name = write_episode(
            out,
            frames=frames,
            actions=actions,
            labeled=labeled,
            rewards=rewards,
            task=task_id,
            terminated=terminated,
            fps=info["fps"] or 0.0,
            source="video",
            meta=record,
        )
        del frames
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return name, {
        "frames": n,
        "labeled": int(labeled.sum()),
        "fps": info["fps"],
        "source": (info["width"], info["height"]),
    }


def run(args: Any) -> int:
    """``lol-dreamer ingest VIDEO --out DIR [--actions CSV] [--res 128] [--task farm]``."""
    name, s = ingest_video(
        args.video,
        args.out,
        actions_csv=args.actions,
        res=args.res,
        task=args.task,
        max_frames=args.max_frames,
    )
    src_w, src_h = s["source"]
    fps = f"{s['fps']:.2f} fps" if s["fps"] else "unknown fps"
    print(
        f"ingested {args.video} ({src_w}x{src_h}, {fps}) → {Path(args.out) / 'episodes' / name}: "
        f"{s['frames']} frames at {args.res}x{args.res}, {s['labeled']} labeled"
        f"{'' if args.actions else ' (no --actions CSV: unlabeled)'}, task {args.task}"
    )
    return 0
