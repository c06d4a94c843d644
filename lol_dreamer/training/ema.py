"""Exponential moving average of a module's weights (evaluated and published instead of the raw weights)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copy ``θ̄ ← decay · θ̄ + (1 − decay) · θ`` of every floating-point entry of a state dict.

    Buffers are averaged like parameters; integer buffers (counters) are copied. The shadow lives
    on the module's device in float32 so bf16 training does not round the average away.

    Args:
        module: the model whose weights are averaged (the shadow starts equal to them).
        decay: averaging constant in [0, 1); 0.999 averages over ~1000 steps.

    Example:
        >>> m = nn.Linear(2, 2); ema = EMA(m, decay=0.9)
        >>> ema.update(m); ema.copy_to(m)
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] = {
            k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
            for k, v in module.state_dict().items()
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the shadow one step towards ``module``'s current weights."""
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach().float(), 1.0 - self.decay)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, keyed like ``module.state_dict()`` (float32)."""
        return dict(self.shadow)

    def averaged_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The averaged weights cast to ``module``'s dtypes, ready for ``load_state_dict``."""
        ref = module.state_dict()
        return {k: v.to(ref[k].dtype) for k, v in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the shadow saved by :meth:`state_dict`."""
        missing = set(self.shadow) - set(state)
        unexpected = set(state) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not match the model (missing {sorted(missing)[:5]}, unexpected "
                f"{sorted(unexpected)[:5]}); resume with the same model config or start a new run"
            )
        for k, v in state.items():
            self.shadow[k].copy_(v)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite ``module``'s weights with the average."""
        module.load_state_dict(self.averaged_state_dict(module))
