"""Running RMS loss normaliser (DreamerV4 §3, arXiv 2509.24527: every loss term is divided by a
running estimate of its root-mean-square so that terms of different scales weigh in evenly)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningRMS(nn.Module):
    """Exponential moving average of ``mean(x²)``; ``normalize(x) = x / sqrt(ema + eps)``.

    The first update sets the average to the observed value (no bias towards zero); later updates
    use ``ema ← decay · ema + (1 − decay) · mean(x²)``. The statistic never carries gradient. State
    (``ema``, ``count``) lives in buffers, so ``state_dict`` / ``load_state_dict`` resume exactly.

    Example:
        >>> rms = RunningRMS(decay=0.9)
        >>> rms.normalize(torch.tensor(4.0))  # first value: ema = 16 → 4 / 4
        tensor(1.0000)
    """

    ema: Tensor
    count: Tensor

    def __init__(self, decay: float = 0.99, eps: float = 1e-8) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.eps = decay, eps
        self.register_buffer("ema", torch.zeros((), dtype=torch.float32))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Fold ``mean(x²)`` of a value (any shape) into the average."""
        sq = x.detach().float().pow(2).mean().to(self.ema.device)
        if self.count.item() == 0:
            self.ema.copy_(sq)
        else:
            self.ema.mul_(self.decay).add_((1.0 - self.decay) * sq)
        self.count.add_(1)

    @property
    def rms(self) -> float:
        """Current ``sqrt(ema + eps)``."""
        return float((self.ema + self.eps).sqrt())

    def normalize(self, x: Tensor, update: bool = True) -> Tensor:
        """Divide ``x`` by the running RMS (updating it with ``x`` first unless ``update=False``).

        Args:
            x: value to normalise (gradient flows through ``x``, not through the statistic).
        Returns:
            ``x / sqrt(ema + eps)``, same shape and dtype as ``x``.
        """
        if update:
            self.update(x)
        scale = (self.ema + self.eps).rsqrt().to(device=x.device, dtype=x.dtype)
        return x * scale
