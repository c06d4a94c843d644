"""Tokenizer reconstruction loss: MSE + 0.2 · LPIPS, each term divided by its running RMS.

DreamerV4 §3.1 (arXiv 2509.24527): the tokenizer is trained with ``L = L_MSE + 0.2 · L_LPIPS``; as for
all its losses, each term is normalised by a running estimate of its RMS (:class:`RunningRMS`).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from lol_dreamer.objectives.lpips_weights import (
    LPIPSWeightsMissing,
    build_lpips,
    find_vgg16_weights,
)
from lol_dreamer.objectives.rms import RunningRMS

__all__ = ["LPIPSWeightsMissing", "TokenizerLoss", "find_vgg16_weights"]


class TokenizerLoss(nn.Module):
    """``total = mse / rms_mse + lpips_weight · lpips / rms_lpips``.

    Args:
        lpips_weight: weight of the perceptual term; 0 builds no LPIPS network at all.
        lpips_weights_path: torchvision VGG16 weights file (or directory); None searches the torch hub
            cache (``TORCH_HOME``). Nothing is downloaded.
        rms_decay: decay of the running RMS estimates.
        lpips_max_images: compute LPIPS on at most this many (randomly chosen) images of the batch,
            to bound its cost on CPU; None uses every image.
        allow_random_backbone: tests only: a random VGG when no weights exist (never for training).
    Raises:
        LPIPSWeightsMissing: ``lpips_weight > 0`` and no VGG16 weights were found.

    Example:
        >>> loss_fn = TokenizerLoss(lpips_weight=0.0)
        >>> total, terms = loss_fn(torch.zeros(1, 2, 3, 8, 8), torch.ones(1, 2, 3, 8, 8))
        >>> float(terms["mse"])
        1.0
    """

    def __init__(
        self,
        lpips_weight: float = 0.2,
        lpips_weights_path: str | os.PathLike | None = None,
        rms_decay: float = 0.99,
        lpips_max_images: int | None = None,
        allow_random_backbone: bool = False,
    ) -> None:
        super().__init__()
        if lpips_weight < 0:
            raise ValueError(f"lpips_weight must be >= 0, got {lpips_weight}")
        self.lpips_weight = lpips_weight
        self.lpips_max_images = lpips_max_images
        self.rms = nn.ModuleDict({"mse": RunningRMS(rms_decay)})
        self.lpips: nn.Module | None = None
        if lpips_weight > 0:
            self.lpips = build_lpips(
                lpips_weights_path, allow_random_backbone=allow_random_backbone
            )
            self.rms["lpips"] = RunningRMS(rms_decay)

    def train(self, mode: bool = True) -> TokenizerLoss:
        super().train(mode)
        if self.lpips is not None:  # LPIPS is a fixed metric: its dropout stays off
            self.lpips.eval()
        return self

    def perceptual(self, recon: Tensor, target: Tensor) -> Tensor:
        """Mean LPIPS distance between ``[..., 3, H, W]`` images in [0, 1]."""
        if self.lpips is None:
            raise RuntimeError(
                "this TokenizerLoss was built with lpips_weight=0 and has no LPIPS network"
            )
        a = recon.reshape(-1, *recon.shape[-3:])
        b = target.reshape(-1, *target.shape[-3:])
        if self.lpips_max_images is not None and a.shape[0] > self.lpips_max_images:
            idx = torch.randperm(a.shape[0], device=a.device)[: self.lpips_max_images]
            a, b = a[idx], b[idx]
        return self.lpips(a, b, normalize=True).mean()

    def forward(self, recon: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """
        Args:
            recon: reconstruction ``[b, t, c, H, W]`` (unclamped is fine).
            target: frames ``[b, t, c, H, W]`` in [0, 1].
        Returns:
            ``(total, terms)``: the optimised scalar, and the raw un-normalised terms (detached
            scalars) by name: ``mse`` and, when LPIPS is on, ``lpips``.
        """
        if recon.shape != target.shape:
            raise ValueError(
                f"recon {tuple(recon.shape)} and target {tuple(target.shape)} differ in shape"
            )
        mse = (recon.float() - target.float()).pow(2).mean()
        total = self.rms["mse"].normalize(mse)
        terms = {"mse": mse.detach()}
        if self.lpips is not None:
            lp = self.perceptual(recon.float(), target.float())
            total = total + self.lpips_weight * self.rms["lpips"].normalize(lp)
            terms["lpips"] = lp.detach()
        return total, terms

    def rms_state(self) -> dict[str, Tensor]:
        """Running-RMS state as flat tensors (``"mse.ema"``, ``"mse.count"``, …) for safetensors."""
        return {
            f"{name}.{k}": v.clone()
            for name, m in self.rms.items()
            for k, v in m.state_dict().items()
        }

    def load_rms_state(self, state: dict[str, Tensor]) -> None:
        """Restore :meth:`rms_state` output (resume exactly)."""
        for name, m in self.rms.items():
            m.load_state_dict({k: state[f"{name}.{k}"] for k in m.state_dict()})
