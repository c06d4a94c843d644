"""The shared loop flags (``commands/loop_args.py``) and :meth:`TrainConfig.from_args`."""

from __future__ import annotations

import pytest

from lol_dreamer.cli import build_parser
from lol_dreamer.training.config import TrainConfig

REQUIRED = {
    "tokenizer": ["--data", "d", "--out", "o"],
    "dynamics": ["--data", "d", "--tokenizer", "t", "--out", "o"],
    "agent": ["--world-model", "w", "--data", "d", "--out", "o"],
    "imagine": ["--agent", "a", "--out", "o"],
}


def _config(cmd: str, *flags: str) -> TrainConfig:
    args = build_parser().parse_args(["train", cmd, *REQUIRED[cmd], *flags])
    if cmd == "imagine":
        return TrainConfig.from_args(args, batch_size=args.batch)
    return TrainConfig.from_args(args)


@pytest.mark.parametrize(
    ("cmd", "steps", "batch", "lr", "wd", "eval_every", "save_every", "progress"),
    [
        ("tokenizer", 3000, 8, 5e-4, 0.01, 250, 500, True),
        ("dynamics", 20000, 16, 3e-4, 0.01, 500, 1000, True),
        ("agent", 5000, 16, 1e-4, 0.01, 500, 1000, True),
        ("imagine", 1000, 16, 1e-4, 0.0, 0, 100, True),
    ],
)
def test_each_command_keeps_its_defaults(
    cmd: str,
    steps: int,
    batch: int,
    lr: float,
    wd: float,
    eval_every: int,
    save_every: int,
    progress: bool,
) -> None:
    cfg = _config(cmd)
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.weight_decay) == (steps, batch, lr, wd)
    assert (cfg.eval_every, cfg.save_every, cfg.log_every) == (eval_every, save_every, 10)
    assert (cfg.warmup, cfg.grad_clip, cfg.ema_decay) == (None, 1.0, 0.0)
    assert (cfg.amp, cfg.seed, cfg.device, cfg.progress, cfg.compile) == (
        "auto",
        0,
        "auto",
        progress,
        False,
    )


def test_flags_map_onto_fields() -> None:
    cfg = _config(
        "dynamics",
        *("--steps", "7", "--batch-size", "3", "--lr", "0.1", "--warmup", "2"),
        *("--weight-decay", "0.5", "--grad-clip", "0", "--ema", "--ema-decay", "0.9"),
        *("--eval-every", "4", "--save-every", "5", "--log-every", "6", "--seed", "9"),
        *("--device", "cpu", "--precision", "fp32", "--quiet"),
    )
    assert cfg == TrainConfig(
        steps=7, batch_size=3, lr=0.1, warmup=2, weight_decay=0.5, grad_clip=0.0, ema_decay=0.9,
        eval_every=4, save_every=5, log_every=6, seed=9, device="cpu", amp="off", progress=False,
    )  # fmt: skip
    # --ema-decay alone does not turn the EMA on; bf16 maps to bf16; --compile reaches the config.
    tok = _config("tokenizer", "--ema-decay", "0.5", "--precision", "bf16", "--compile")
    assert (tok.ema_decay, tok.amp, tok.compile) == (0.0, "bf16", True)


def test_commands_declare_only_their_flags() -> None:
    sub = build_parser()
    dests = {}
    for cmd, req in REQUIRED.items():
        args = sub.parse_args(["train", cmd, *req])
        dests[cmd] = set(vars(args))
    assert {"compile", "lpips_weight"} <= dests["tokenizer"] and "quiet" not in dests["tokenizer"]
    assert "compile" in dests["dynamics"] and "compile" not in dests["agent"]
    assert "batch_size" not in dests["imagine"] and "batch" in dests["imagine"]
    assert not {"ema", "ema_decay", "eval_every", "held_out"} & dests["imagine"]
    for cmd in ("dynamics", "agent"):
        assert {"quiet", "held_out", "split_seed", "eval_batches", "ema"} <= dests[cmd]


@pytest.mark.parametrize("cmd", ["tokenizer", "dynamics", "agent", "imagine"])
def test_time_limit_on_every_train_command(cmd: str) -> None:
    assert _config(cmd, "--time-limit", "1.5").time_limit == 90.0
    assert _config(cmd).time_limit == 0.0


@pytest.mark.parametrize("cmd", ["tokenizer", "dynamics"])
def test_compile_flag(cmd: str) -> None:
    assert _config(cmd, "--compile").compile and not _config(cmd).compile


def test_dynamics_model_flags() -> None:
    args = build_parser().parse_args(
        [
            "train",
            "dynamics",
            *REQUIRED["dynamics"],
            "--zero-init-out",
            "on",
            "--kalman-skip",
            "off",
        ]
    )
    assert args.zero_init_out == "on" and args.kalman_skip == "off"
    assert (
        build_parser().parse_args(["train", "dynamics", *REQUIRED["dynamics"]]).zero_init_out
        is None
    )
