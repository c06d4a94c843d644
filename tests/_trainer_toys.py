"""Toy model, objective and data shared by the trainer tests."""

from __future__ import annotations

import torch
from torch import nn

from lol_dreamer.training import LossOutput


def build_toy(cfg: dict) -> nn.Module:
    torch.manual_seed(cfg.get("seed", 0))
    return nn.Sequential(
        nn.Linear(cfg["d_in"], cfg["hidden"]), nn.Tanh(), nn.Linear(cfg["hidden"], 1)
    )


class ToyData:
    """Batches are a pure function of (seed, step, rank), like the package's samplers."""

    def __init__(self, seed: int = 0, batch: int = 16, d_in: int = 4, rank: int = 0) -> None:
        self.seed, self.batch, self.d_in, self.rank = seed, batch, d_in, rank
        g = torch.Generator().manual_seed(1234)
        self.w = torch.randn(d_in, 1, generator=g)

    def sample(self, step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + self.rank)
        x = torch.randn(self.batch, self.d_in, generator=g)
        return {"x": x, "y": x @ self.w + 0.1 * torch.sin(3 * x[:, :1])}


class RMSObjective:
    """MSE normalised by a running RMS (state saved in checkpoints) plus an input-noise term drawn from
    the global torch RNG, so exact resume also needs the RNG state."""

    def __init__(self, decay: float = 0.9, nan_at: int | None = None) -> None:
        self.decay = decay
        self.rms = torch.ones(())
        self.nan_at = nan_at

    def __call__(self, model: nn.Module, batch: dict, step: int) -> LossOutput:
        noise = 0.01 * torch.randn_like(batch["x"])
        pred = model(batch["x"] + noise)
        mse = (pred - batch["y"]).pow(2).mean()
        self.rms = self.decay * self.rms + (1 - self.decay) * mse.detach().pow(2)
        loss = mse / self.rms.sqrt().clamp_min(1e-8)
        if self.nan_at is not None and step >= self.nan_at:
            loss = loss * float("nan")
        return LossOutput(
            loss, {"mse": mse.detach(), "abs": (pred - batch["y"]).abs().mean().detach()}
        )

    def state_dict(self) -> dict:
        return {"rms": self.rms.clone(), "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.rms = state["rms"].clone()
        self.decay = state["decay"]
