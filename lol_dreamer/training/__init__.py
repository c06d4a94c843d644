"""The shared training loop (:mod:`.trainer`), LR schedule, EMA, run state and DDP helpers."""

from lol_dreamer.training.config import (
    LossOutput,
    NonFiniteLossError,
    Objective,
    TrainConfig,
    TrainResult,
)
from lol_dreamer.training.ema import EMA
from lol_dreamer.training.schedule import WarmupCosine, default_warmup
from lol_dreamer.training.trainer import Trainer, train

__all__ = [
    "EMA",
    "LossOutput",
    "NonFiniteLossError",
    "Objective",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WarmupCosine",
    "default_warmup",
    "train",
]
