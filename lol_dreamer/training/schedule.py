"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

The schedule is a pure function of the optimiser step, so resuming needs only the step count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def default_warmup(steps: int) -> int:
    """Warmup length used when none is given: ``min(1000, 5% of steps)`` (SPEC §1), so short runs train.

    Args:
        steps: total optimiser steps of the run.

    Returns:
        The number of warmup steps (0 for runs shorter than 20 steps).

    Example:
        >>> default_warmup(100), default_warmup(100_000)
        (5, 1000)
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return min(1000, int(0.05 * steps))


@dataclass(frozen=True)
class WarmupCosine:
    """``lr(step)``: linear warmup from ``lr / warmup`` to ``lr``, then half-cosine to ``lr · min_lr_ratio``.

    Args:
        lr: peak learning rate.
        steps: total optimiser steps; the cosine reaches its floor at the last step.
        warmup: warmup steps (``None`` → :func:`default_warmup`).
        min_lr_ratio: floor as a fraction of ``lr``.
    """

    lr: float
    steps: int
    warmup: int | None = None
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.warmup is None:
            object.__setattr__(self, "warmup", default_warmup(self.steps))
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    def __call__(self, step: int) -> float:
        """Learning rate for the update made at 0-based optimiser ``step``."""
        warmup = int(self.warmup)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        decay_steps = max(1, self.steps - warmup - 1)
        progress = min(1.0, max(0.0, (step - warmup) / decay_steps))
        floor = self.lr * self.min_lr_ratio
        return floor + 0.5 * (self.lr - floor) * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict:
        """JSON-safe description (the schedule has no other state)."""
        return {"kind": "warmup_cosine", **asdict(self)}
