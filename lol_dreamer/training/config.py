"""The training-loop contracts: :class:`TrainConfig`, the objective protocol and what a run returns."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from lol_dreamer.training.schedule import default_warmup


@dataclass
class TrainConfig:
    """Optimisation settings shared by every phase (saved as ``config.json["train"]``).

    Attributes:
        steps: total optimiser steps of the run (also when resuming).
        batch_size: sequences per step per rank (recorded; the batch source applies it).
        lr: peak learning rate.
        warmup: linear-warmup steps; None → min(1000, 5% of ``steps``) (SPEC §1).
        min_lr_ratio: cosine floor as a fraction of ``lr``.
        weight_decay: AdamW decoupled weight decay on matrices (norm gains and biases get none).
        betas: AdamW betas.
        grad_clip: global gradient-norm clip (≤ 0: measure only).
        ema_decay: EMA of weights (0 = off); the EMA weights are evaluated and published.
        eval_every: evaluate every N steps and at the end (0 = only at the end).
        save_every: checkpoint every N steps and at the end (0 = only at the end).
        log_every: refresh the progress bar every N steps.
        compile: ``torch.compile`` the model's forward.
        grad_checkpointing: recompute activations in backward (needs model support).
        amp: ``"auto"`` (bf16 autocast on CUDA, off on CPU), ``"bf16"`` or ``"off"``.
        seed: seeds torch / NumPy / Python RNGs at the start (offset by rank).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        progress: show a tqdm bar and print the summary (rank 0).
        time_limit: wall-clock budget of this invocation in seconds (0 = none). After a short
            calibration the run shortens its step count so that the warmup and the cosine end inside
            the budget, and it stops at the budget regardless (final evaluation and checkpoint
            included); the shortened plan is kept in the run state, so ``--resume`` with the same
            ``steps`` follows it.
        prefetch: batches drawn ahead in a background thread (-1 = auto: 2 on CUDA with a
            stateless batch source, else 0). See :mod:`lol_dreamer.training.prefetch`.
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-4
    warmup: int | None = None
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    eval_every: int = 0
    save_every: int = 500
    log_every: int = 10
    compile: bool = False
    grad_checkpointing: bool = False
    amp: str = "auto"
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    time_limit: float = 0.0
    prefetch: int = -1

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")
        if self.time_limit < 0:
            raise ValueError(f"time_limit must be >= 0 seconds, got {self.time_limit}")

    @property
    def warmup_steps(self) -> int:
        return default_warmup(self.steps) if self.warmup is None else self.warmup

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> TrainConfig:
        """The loop flags of :func:`lol_dreamer.commands.loop_args.add_loop_args` as a config.

        A flag the command does not declare (``--batch-size``, ``--eval-every``, ``--ema``,
        ``--compile``, ``--quiet``) leaves the field at its dataclass default.

        Args:
            args: the parsed command line.
            **overrides: fields set from elsewhere (e.g. ``batch_size`` from a command's own flag).

        Returns:
            The :class:`TrainConfig` of the run.
        """
        kw: dict[str, Any] = {
            name: getattr(args, name) for name in _LOOP_FLAG_FIELDS if hasattr(args, name)
        }
        kw["ema_decay"] = args.ema_decay if getattr(args, "ema", False) else 0.0
        kw["amp"] = _PRECISION_TO_AMP[args.precision]
        kw["progress"] = not getattr(args, "quiet", False)
        if getattr(args, "time_limit", None) is not None:
            kw["time_limit"] = 60.0 * args.time_limit
        kw.update(overrides)
        return cls(**kw)


# Fields whose command-line flag has the same name (``--batch-size`` → ``batch_size``).
_LOOP_FLAG_FIELDS = (
    "steps",
    "batch_size",
    "lr",
    "warmup",
    "weight_decay",
    "grad_clip",
    "eval_every",
    "save_every",
    "log_every",
    "compile",
    "seed",
    "device",
)
# ``--precision`` → :attr:`TrainConfig.amp`.
_PRECISION_TO_AMP = {"auto": "auto", "fp32": "off", "bf16": "bf16"}


@dataclass
class LossOutput:
    """What an objective returns.

    Attributes:
        loss: scalar tensor, the optimised total.
        terms: raw un-normalised terms by name (floats or scalar tensors).
        metrics: extra diagnostics by name.
    """

    loss: torch.Tensor
    terms: dict[str, float | torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    def __call__(self, model: nn.Module, batch: dict[str, Any], step: int) -> LossOutput: ...


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder (None when nothing was written).
        step: optimiser steps completed in total.
        start_step: the step this session started from (> 0 after resume).
        losses: the loss of each step run in this session.
        eval: the last evaluation's scalars.
        seconds: wall time of this session's loop.
        summary: the closing paragraph.
    """

    run_dir: Path | None
    step: int
    start_step: int
    losses: list[float]
    eval: dict[str, float]
    seconds: float
    summary: str


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN/Inf; training stopped before applying the update."""
