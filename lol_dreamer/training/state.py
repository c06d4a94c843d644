"""``RUN/state/``: everything needed to continue a run exactly where it stopped.

Layout (JSON + safetensors, never pickle):

| file | holds |
|---|---|
| ``trainer.json`` | step, world size, schedule, optimiser hyper-parameters and non-tensor state, objective / sampler / RNG non-tensor parts |
| ``model.safetensors`` | the raw (un-averaged) training weights |
| ``ema.safetensors`` | the EMA shadow (when EMA is on) |
| ``tensors.safetensors`` | optimiser moments, objective tensors (running RMS…), RNG states of every rank |

The folder is written beside the old one and swapped in by rename, so a crash while saving leaves
the previous state intact.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lol_dreamer.checkpoint import decode_tree, encode_tree, load_state_dict_file, save_state_dict
from lol_dreamer.io import atomic_write_json, read_json

FORMAT = 1


def capture_rng() -> dict[str, Any]:
    """This process's RNG states (torch CPU, every CUDA device, NumPy global, Python ``random``)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": keys.astype(np.int64),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], np.asarray(n["keys"]).astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [t.to(torch.uint8) for t in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


@dataclass
class RunState:
    """What :func:`load_run_state` returns (and :func:`save_run_state` takes).

    Attributes:
        step: optimiser steps completed.
        model: raw weights.
        optimizer: ``optimizer.state_dict()``.
        schedule: the schedule's JSON description.
        ema: EMA shadow or None.
        objective: ``objective.state_dict()`` or None.
        sampler: ``sampler.state_dict()`` or None.
        rng: per-rank RNG states (index = rank).
        world_size: number of ranks that produced it.
        extra: free-form JSON-safe additions.
    """

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict
    schedule: dict
    ema: dict[str, torch.Tensor] | None = None
    objective: Any = None
    sampler: Any = None
    rng: list[dict] = field(default_factory=list)
    world_size: int = 1
    extra: dict = field(default_factory=dict)


def state_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "state"


def has_state(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds a resumable state (also after a crash in the middle of a swap)."""
    run_dir = Path(run_dir)
    return (run_dir / "state" / "trainer.json").exists() or (
        run_dir / ".state.old" / "trainer.json"
    ).exists()


def refuse_existing_run(run_dir: str | os.PathLike, resume: bool) -> None:
    """Raise unless ``run_dir`` is free for a new run or ``resume`` asks to continue it.

    Args:
        run_dir: the run folder (``--out``).
        resume: ``--resume`` was given.

    Raises:
        ValueError: ``run_dir`` already holds a resumable run and ``resume`` is False.
    """
    if not resume and has_state(run_dir):
        raise ValueError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )


def save_run_state(run_dir: str | os.PathLike, st: RunState) -> Path:
    """Write ``RUN/state/`` atomically (new folder, then rename over the old one).

    Args:
        run_dir: the run folder.
        st: the state to save.

    Returns:
        The state folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final, old = run_dir / "state", run_dir / ".state.old"
    tmp = run_dir / f".state.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    meta = {
        "format": FORMAT,
        "step": int(st.step),
        "world_size": int(st.world_size),
        "schedule": st.schedule,
        "optimizer": encode_tree(st.optimizer, tensors, "optimizer"),
        "objective": encode_tree(st.objective, tensors, "objective"),
        "sampler": encode_tree(st.sampler, tensors, "sampler"),
        "rng": encode_tree(st.rng, tensors, "rng"),
        "ema": st.ema is not None,
        "extra": st.extra,
    }
    save_state_dict(tmp / "model.safetensors", st.model)
    if st.ema is not None:
        save_state_dict(tmp / "ema.safetensors", st.ema)
    save_state_dict(tmp / "tensors.safetensors", tensors)
    atomic_write_json(tmp / "trainer.json", meta)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def load_run_state(run_dir: str | os.PathLike) -> RunState:
    """Read ``RUN/state/`` (falling back to the previous copy if a save was cut short).

    Raises:
        FileNotFoundError: no state in ``run_dir``.
        ValueError: the state is damaged or from an unknown format.
    """
    run_dir = Path(run_dir)
    folder = run_dir / "state"
    if not (folder / "trainer.json").exists():
        folder = run_dir / ".state.old"
    if not (folder / "trainer.json").exists():
        raise FileNotFoundError(
            f"no resumable state in {run_dir} (expected {run_dir / 'state' / 'trainer.json'}); start without --resume"
        )
    meta = read_json(folder / "trainer.json")
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{folder} has state format {meta.get('format')}, this version reads {FORMAT}; start a new run"
        )
    tensors = load_state_dict_file(folder / "tensors.safetensors")
    return RunState(
        step=int(meta["step"]),
        model=load_state_dict_file(folder / "model.safetensors"),
        optimizer=decode_tree(meta["optimizer"], tensors),
        schedule=meta["schedule"],
        ema=load_state_dict_file(folder / "ema.safetensors") if meta["ema"] else None,
        objective=decode_tree(meta["objective"], tensors),
        sampler=decode_tree(meta["sampler"], tensors),
        rng=decode_tree(meta["rng"], tensors),
        world_size=int(meta["world_size"]),
        extra=meta.get("extra", {}),
    )
