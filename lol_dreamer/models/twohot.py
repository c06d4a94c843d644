"""Symlog / symexp and the two-hot categorical used for rewards and values.

Rewards and values span orders of magnitude, so the heads predict a categorical distribution over
255 bins spaced evenly in *symlog* space (DreamerV3 §"Robust predictions", arXiv 2301.04104, reused
by DreamerV4 §3.3, arXiv 2509.24527). A scalar target becomes a "two-hot" vector: all mass on the
two bins around ``symlog(x)``, split so the expectation over bins equals ``symlog(x)`` exactly.
The prediction is ``symexp(Σ_i p_i · b_i)``.

Example:
    >>> th = TwoHot()
    >>> x = torch.tensor([0.0, 1.5, -300.0])
    >>> torch.allclose(th.decode(th.encode(x).log()), x, rtol=1e-5)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def symlog(x: Tensor) -> Tensor:
    """``sign(x) · ln(1 + |x|)`` (DreamerV3 eq. 9, arXiv 2301.04104)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    """Inverse of :func:`symlog`: ``sign(x) · (exp(|x|) − 1)``."""
    return torch.sign(x) * torch.expm1(x.abs())


class TwoHot(nn.Module):
    """A two-hot categorical over ``bins`` points evenly spaced in symlog space on ``[low, high]``.

    Args:
        bins: number of bins (odd, so that 0 is a bin; 255 by default).
        low, high: symlog-space range; targets outside are clamped to the edge bins.
    """

    def __init__(self, bins: int = 255, low: float = -20.0, high: float = 20.0) -> None:
        super().__init__()
        if bins < 2 or not low < high:
            raise ValueError(
                f"TwoHot needs bins >= 2 and low < high, got bins={bins}, [{low}, {high}]"
            )
        self.n_bins, self.low, self.high = bins, float(low), float(high)
        grid = low + (high - low) * torch.arange(bins, dtype=torch.float64) / (bins - 1)
        self.register_buffer("bins", grid.float(), persistent=False)  # 0 is exactly a bin

    def encode(self, x: Tensor) -> Tensor:
        """Soft two-hot targets for scalars.

        Args:
            x: values ``[...]`` (raw, not symlog).
        Returns:
            ``[..., bins]`` float32 probabilities, at most two non-zero, with
            ``Σ_i p_i b_i = symlog(x)`` (clamped to ``[low, high]``).
        """
        y = symlog(x.float()).clamp(self.low, self.high)
        step = (self.high - self.low) / (self.n_bins - 1)
        pos = (y - self.low) / step  # fractional bin index in [0, bins-1]
        lo = pos.floor().long().clamp(0, self.n_bins - 2)
        b_lo = self.bins[lo]
        b_hi = self.bins[lo + 1]
        w_hi = ((y - b_lo) / (b_hi - b_lo)).clamp(0.0, 1.0)
        out = torch.zeros(*y.shape, self.n_bins, device=y.device, dtype=torch.float32)
        out.scatter_(-1, lo.unsqueeze(-1), (1.0 - w_hi).unsqueeze(-1))
        out.scatter_add_(-1, (lo + 1).unsqueeze(-1), w_hi.unsqueeze(-1))
        return out

    def decode(self, logits: Tensor) -> Tensor:
        """Expected value ``symexp(Σ_i softmax(logits)_i · b_i)``.

        Args:
            logits: ``[..., bins]``.
        Returns:
            ``[...]`` float32.
        """
        return self.decode_probs(F.softmax(logits.float(), dim=-1))

    def decode_probs(self, probs: Tensor) -> Tensor:
        """Like :meth:`decode` for probabilities ``[..., bins]``."""
        self._check(probs)
        return symexp((probs.float() * self.bins).sum(-1))

    def log_prob(self, logits: Tensor, x: Tensor) -> Tensor:
        """``Σ_i target_i · log softmax(logits)_i``: the two-hot log-likelihood of ``x``.

        Args:
            logits: ``[..., bins]``; x: ``[...]`` raw targets.
        Returns:
            ``[...]`` (≤ 0).
        """
        self._check(logits)
        return (self.encode(x) * F.log_softmax(logits.float(), dim=-1)).sum(-1)

    def loss(self, logits: Tensor, x: Tensor) -> Tensor:
        """Cross-entropy against the two-hot target: ``−log_prob(logits, x)``, shape ``[...]``."""
        return -self.log_prob(logits, x)

    def _check(self, t: Tensor) -> None:
        if t.shape[-1] != self.n_bins:
            raise ValueError(
                f"expected a last dimension of {self.n_bins} bins, got shape {tuple(t.shape)}; "
                "pass head logits, not decoded values"
            )
