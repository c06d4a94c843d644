"""Draw training batches ahead of the loop in a background thread.

On a GPU the training step of a small model is short, and drawing the next batch (gathering windows
from memory-mapped episodes, converting frames to floats) would otherwise sit between two steps with
the GPU idle. :class:`Prefetcher` draws batches ``start, start + 1, …`` in order, pins them for an
asynchronous copy, and hands them out in the same order, so the batches — a pure function of the
step for the package's samplers — are the same as without it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import torch


def pin(batch: Any) -> Any:
    """Every CPU tensor of a nested dict / list / tuple in page-locked memory (for ``non_blocking``)."""
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory() if batch.device.type == "cpu" else batch
    if isinstance(batch, dict):
        return {k: pin(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(pin(v) for v in batch)
    return batch


class Prefetcher:
    """Batches of consecutive steps drawn by a daemon thread, at most ``depth`` ahead.

    Args:
        batch_fn: ``batch_fn(step) -> batch``; must not depend on what the loop does between calls
            (the package's samplers are pure functions of the step).
        start: the first step to draw.
        depth: batches held ready (≥ 1).
        pin_memory: pin each batch (worth it when the loop copies to a GPU).

    Example:
        >>> pf = Prefetcher(lambda s: {"x": torch.full((2,), float(s))}, start=3, depth=2)
        >>> float(pf.get(3)["x"][0]), float(pf.get(4)["x"][0])
        (3.0, 4.0)
        >>> pf.close()
    """

    def __init__(
        self, batch_fn: Callable[[int], Any], start: int, depth: int = 2, pin_memory: bool = False
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.batch_fn, self.pin_memory = batch_fn, pin_memory
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(start,), daemon=True)
        self._thread.start()

    def _run(self, step: int) -> None:
        while not self._stop.is_set():
            try:
                item: Any = self.batch_fn(step)
                if self.pin_memory:
                    item = pin(item)
            except BaseException as e:  # handed to the loop, which raises it
                item = e
            while not self._stop.is_set():
                try:
                    self._queue.put((step, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
            step += 1

    def get(self, step: int) -> Any:
        """The batch of ``step`` (steps must be asked for in order, from ``start``)."""
        got, item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if got != step:
            raise RuntimeError(f"prefetcher out of order: asked for step {step}, next is {got}")
        return item

    def close(self) -> None:
        """Stop the thread (batches drawn ahead are dropped)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)
