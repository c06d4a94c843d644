"""``RUN/metrics.jsonl`` (one JSON row per optimiser step) plus TensorBoard when it is installed."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLog:
    """Appends rows to ``RUN/metrics.jsonl``; mirrors scalars to TensorBoard (``RUN/tb``) if available.

    Args:
        run_dir: the run folder.
        resume_step: when resuming, rows with ``step > resume_step`` are dropped first so the file
            keeps exactly one row per optimiser step; ``None`` starts a fresh file.
        tensorboard: also write TensorBoard event files (needs the ``tensorboard`` package).
    """

    def __init__(
        self, run_dir: str | os.PathLike, resume_step: int | None = None, tensorboard: bool = True
    ) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            truncate_metrics(self.path, resume_step)
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (kept open for the run)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:
                self._tb = None

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (must contain ``step``)."""
        self._f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    def flush(self) -> None:
        if self._f.closed:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self._f.closed:
            self.flush()
            self._f.close()
        if self._tb is not None:
            self._tb.close()


def truncate_metrics(path: str | os.PathLike, step: int) -> None:
    """Keep only the rows of ``path`` with ``step <= step`` (a damaged trailing line is dropped)."""
    path = Path(path)
    if not path.exists():
        path.write_text("")
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and int(row.get("step", -1)) <= step:
            kept.append(line)
    from lol_dreamer.io import atomic_write

    text = "".join(line + "\n" for line in kept)
    atomic_write(path, lambda p: p.write_text(text))


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of ``RUN/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
