"""Run-folder checkpoints: safetensors for tensors, JSON for everything else, never pickle.

A run folder (SPEC §1) holds ``config.json`` (``{"kind", "model", "train", "data", …}``),
``model.safetensors`` (published weights, EMA when enabled), ``metrics.jsonl`` and ``state/``
(everything needed to resume exactly; see :mod:`lol_dreamer.training.state`). A model rebuilds
from ``config.json`` alone through a ``kind → builder`` registry whose builders are imported lazily.

Example:
    >>> model = load_model("runs/tok")            # doctest: +SKIP
    >>> cfg = load_run_config("runs/tok")["model"]  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lol_dreamer.io import atomic_write, read_json

# kind → "module:function" taking the ``model`` section of config.json and returning an nn.Module.
# Add one line per model family; the module is imported only when such a run is loaded.
BUILDERS: dict[str, str] = {
    "tokenizer": "lol_dreamer.models:build_tokenizer",
    "dynamics": "lol_dreamer.models.agent_model:build_dynamics_model",
    "agent": "lol_dreamer.models.agent_model:build_agent_model",
    "imagine": "lol_dreamer.models.agent_model:build_agent_model",
}


def register_builder(kind: str, target: str | Callable[[dict], nn.Module]) -> None:
    """Teach :func:`load_model` to rebuild runs of ``kind``.

    Args:
        kind: the ``"kind"`` written in the run's ``config.json``.
        target: ``"package.module:function"`` (imported lazily) or the builder itself.
    """
    BUILDERS[kind] = target  # type: ignore[assignment]


def _builder(kind: str) -> Callable[[dict], nn.Module]:
    if kind not in BUILDERS:
        raise ValueError(
            f"don't know how to rebuild a model of kind {kind!r}; known kinds: {sorted(BUILDERS)} "
            "(register one with lol_dreamer.checkpoint.register_builder)"
        )
    target = BUILDERS[kind]
    if callable(target):
        return target
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


# ---------------------------------------------------------------------------------------------
# Weights


def _shared_aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Keys whose tensor is exactly an earlier key's tensor (tied weights) → that earlier key."""
    seen: dict[tuple, str] = {}
    aliases = {}
    for k, v in state.items():
        ident = (
            v.device,
            v.untyped_storage().data_ptr(),
            v.storage_offset(),
            tuple(v.shape),
            tuple(v.stride()),
        )
        if v.numel() and ident in seen:
            aliases[k] = seen[ident]
        else:
            seen[ident] = k
    return aliases


def save_state_dict(
    path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write a flat tensor dict atomically as safetensors (tied tensors stored once).

    Args:
        path: destination file.
        state: name → tensor (any device; copied to CPU).
        metadata: optional string → string metadata stored in the file header.

    Returns:
        The written path.
    """
    aliases = _shared_aliases(state)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in aliases}
    # Non-aliased views of one storage must still be separate buffers for safetensors.
    ptrs: set[int] = set()
    for k, v in tensors.items():
        if v.numel() and v.untyped_storage().data_ptr() in ptrs:
            tensors[k] = v.clone()
        ptrs.add(tensors[k].untyped_storage().data_ptr())
    meta = dict(metadata or {})
    if aliases:
        meta["aliases"] = json.dumps(aliases)
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; check the run folder (train it first, or pass the right path)"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"{path} is damaged or not a safetensors file ({e}); delete it and re-save it "
            "(resume the run, or retrain)"
        ) from e
    for k, a in json.loads(metadata.get("aliases", "{}")).items():
        tensors[k] = tensors[a]
    return tensors, metadata


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file written by :func:`save_state_dict` (tied tensors restored)."""
    return _read_safetensors(Path(path))[0]


def save_weights(path: str | os.PathLike, module: nn.Module, config: dict | None = None) -> Path:
    """Save ``module.state_dict()`` atomically as safetensors.

    Args:
        path: destination ``*.safetensors`` file.
        module: the model (an unwrapped module, not a DDP / compiled wrapper).
        config: the model config it was built from; stored in the header so a mismatch can name it.

    Returns:
        The written path.
    """
    module = unwrap(module)
    meta = {"config": json.dumps(config)} if config is not None else None
    return save_state_dict(path, module.state_dict(), meta)


def _config_for(path: Path, metadata: dict[str, str]) -> Any:
    if "config" in metadata:
        return json.loads(metadata["config"])
    for run in (path.parent, path.parent.parent):
        if (run / "config.json").exists():
            try:
                return read_json(run / "config.json").get("model")
            except ValueError:
                return None
    return None


def load_weights(path: str | os.PathLike, module: nn.Module, strict: bool = True) -> nn.Module:
    """Load safetensors weights into ``module``, with an error that explains any mismatch.

    Args:
        path: a file written by :func:`save_weights`.
        module: a model built from the same config.
        strict: require the exact same keys and shapes.

    Returns:
        ``module`` (weights loaded in place).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is damaged, or its keys/shapes do not match ``module`` (the message
            lists missing, unexpected and shape-mismatched keys and the config the file was made with).
    """
    path = Path(path)
    tensors, metadata = _read_safetensors(path)
    module = unwrap(module)
    own = module.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    shapes = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing[:8]}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:8]}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {shapes[:8]}")
        cfg = _config_for(path, metadata)
        made_with = f"; the file was made with config {json.dumps(cfg)}" if cfg is not None else ""
        raise ValueError(
            f"{path} does not match this {type(module).__name__}: {'; '.join(parts)}{made_with}. "
            "Build the model from that config (lol_dreamer.checkpoint.load_model(run_dir)) or point at "
            "the run that matches your config."
        )
    with torch.no_grad():
        for k, v in own.items():
            if k in tensors:
                v.copy_(tensors[k].to(v.dtype))
    return module


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


# ---------------------------------------------------------------------------------------------
# Run folders


def load_run_config(run_dir: str | os.PathLike) -> dict:
    """Read ``RUN/config.json``.

    Raises:
        FileNotFoundError: with a hint when ``run_dir`` is not a run folder.
    """
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a run folder (expected config.json + model.safetensors "
            "written by `lol-dreamer train …`)"
        )
    cfg = read_json(path)
    if not isinstance(cfg, dict) or "kind" not in cfg or "model" not in cfg:
        raise ValueError(
            f"{path} lacks the 'kind' and 'model' sections every run config has; it is not a lol-dreamer run"
        )
    return cfg


def load_model(
    run_dir: str | os.PathLike, which: str = "model", device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild a model from ``RUN/config.json`` alone and load its weights, in eval mode.

    Args:
        run_dir: a run folder.
        which: ``"model"`` → ``RUN/model.safetensors`` (EMA weights when the run used EMA);
            ``"raw"`` → the un-averaged training weights in ``RUN/state/model.safetensors``;
            any other name → ``RUN/<which>.safetensors``.
        device: where to put the model.

    Returns:
        The model.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    model = _builder(cfg["kind"])(cfg["model"])
    path = (
        run_dir / "state" / "model.safetensors"
        if which == "raw"
        else run_dir / f"{which}.safetensors"
    )
    load_weights(path, model)
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# Arbitrary state trees (optimiser, objective, RNG) as JSON + safetensors


def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """Replace every tensor / ndarray in a nested structure by a reference, collecting them in ``tensors``.

    Dicts with non-string keys, tuples and arrays are tagged so :func:`decode_tree` restores them exactly.

    Args:
        obj: nested dicts / lists / tuples of tensors, arrays, numbers, strings, bools and None.
        tensors: filled with ``reference → tensor``.
        prefix: reference name prefix.

    Returns:
        A JSON-safe structure.
    """
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode_tree(v, tensors, prefix) for k, v in obj.items()}
        return {
            "__items__": [
                [encode_tree(k, tensors, prefix), encode_tree(v, tensors, prefix)]
                for k, v in obj.items()
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_tree(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, prefix) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(
        f"cannot store a {type(obj).__name__} in a checkpoint (use tensors, arrays, numbers, strings, lists, dicts)"
    )


def decode_tree(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_tree`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj and len(obj) == 1:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj and len(obj) == 1:
            return tensors[obj["__ndarray__"]].numpy()
        if "__items__" in obj and len(obj) == 1:
            return {decode_tree(k, tensors): decode_tree(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj and len(obj) == 1:
            return tuple(decode_tree(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj and len(obj) == 1:
            return float(obj["__float__"])
        return {k: decode_tree(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_tree(v, tensors) for v in obj]
    return obj
