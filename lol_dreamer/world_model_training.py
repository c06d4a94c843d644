"""Pieces shared by the world-model training jobs (``train dynamics``, ``train agent``).

- the tokenizer check: latents must exist and come from the tokenizer the world model will carry;
- :func:`open_latent_split`: the tokenized dataset, checked and split into train / held-out;
- :func:`batch_lengths`: the short/long sequence lengths that fit the episodes;
- :func:`held_out_eval`: the objective's terms on fixed held-out batches, deterministic and
  side-effect free, for the trainer's ``eval_fn``;
- :func:`next_frame_eval`: the dynamics model's one-step prediction of the next latent from a
  clean history, against copying the last latent (the floor a dynamics model must beat first).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tokenizer_identity(run: str | os.PathLike) -> dict[str, Any]:
    """What identifies a tokenizer run: its path, config and the SHA-256 of its weights."""
    from lol_dreamer.checkpoint import load_run_config

    run = Path(run)
    cfg = load_run_config(run)
    if cfg.get("kind") != "tokenizer":
        raise ValueError(
            f"{run} is a {cfg.get('kind')!r} run, not a tokenizer; pass the folder written by "
            "`lol-dreamer train tokenizer` as --tokenizer"
        )
    weights = run / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(
            f"{weights} not found; the tokenizer run is incomplete (train it first)"
        )
    return {"path": str(run.resolve()), "model": cfg["model"], "sha256": file_sha256(weights)}


def _meta_mismatch(meta: dict[str, Any], ident: dict[str, Any]) -> str | None:
    """Why ``latents_meta`` says the latents came from another tokenizer, or None if they match.

    Compares whatever the tokenize step recorded: a weights hash, a config, a path.
    """
    for key, value in meta.items():
        if not isinstance(value, str):
            continue
        if "sha" in key.lower() and len(value) >= 16 and not ident["sha256"].startswith(value[:64]):
            return f"its weights hash {value[:12]}… differs from {ident['sha256'][:12]}…"
    cfg = meta.get("config") or meta.get("tokenizer_config")
    if isinstance(cfg, dict) and cfg != ident["model"]:
        return "its tokenizer config differs"
    return None


def check_latents(
    dataset: Any, tokenizer_run: str | os.PathLike, n_z: int, d_z: int
) -> dict[str, Any]:
    """Make sure every episode has latents of shape ``[T, n_z, d_z]`` made by ``tokenizer_run``.

    Args:
        dataset: an opened dataset.
        tokenizer_run: the tokenizer run folder.
        n_z, d_z: the tokenizer's latent shape.
    Returns:
        The tokenizer's identity (:func:`tokenizer_identity`).
    Raises:
        ValueError: latents are missing, have another shape, or were made by another tokenizer; the
            message gives the ``lol-dreamer tokenize`` command that fixes it.
    """
    ident = tokenizer_identity(tokenizer_run)
    fix = f"run `lol-dreamer tokenize --tokenizer {tokenizer_run} --data {dataset.root}` first"
    if len(dataset) == 0:
        raise ValueError(
            f"{dataset.root} holds no episodes; collect some with `lol-dreamer collect`"
        )
    missing = [e["name"] for e in dataset.entries if not e.get("has_latents")]
    if missing:
        raise ValueError(
            f"{len(missing)} episode(s) of {dataset.root} have no latents (e.g. {missing[0]}); {fix}"
        )
    for i in range(len(dataset)):
        ep = dataset[i]
        lat = ep.latents
        if lat is None or tuple(lat.shape[1:]) != (n_z, d_z):
            shape = None if lat is None else tuple(lat.shape)
            raise ValueError(
                f"episode {ep.name} has latents of shape {shape}, but the tokenizer makes [T, {n_z}, {d_z}]; "
                f"they come from another tokenizer — {fix}"
            )
        why = _meta_mismatch(ep.meta.get("latents_meta") or {}, ident)
        if why:
            raise ValueError(
                f"episode {ep.name}'s latents were made by another tokenizer ({why}); {fix}"
            )
    return ident


@dataclass
class LatentSplit:
    """A tokenized dataset checked against its tokenizer and split by episode.

    Attributes:
        data: the dataset folder as given.
        tokenizer: the tokenizer's :class:`~lol_dreamer.models.tokenizer_config.TokenizerConfig`.
        ident: the tokenizer's identity (:func:`tokenizer_identity`).
        dataset: the whole dataset.
        train: the training episodes.
        held: the held-out episodes.
        held_out: the held-out fraction asked for.
        split_seed: the seed of the split.
    """

    data: str | os.PathLike
    tokenizer: Any
    ident: dict[str, Any]
    dataset: Any
    train: Any
    held: Any
    held_out: float
    split_seed: int

    def record(self, short: int, long: int, **extra: Any) -> dict[str, Any]:
        """The run config's ``"data"`` entry; ``extra`` goes after ``train_frames``."""
        return {
            "path": str(Path(self.data).resolve()),
            "episodes": len(self.dataset),
            "train_frames": self.train.total_frames,
            **extra,
            "held_out": self.held_out,
            "split_seed": self.split_seed,
            "held_out_episodes": list(self.held.names),
            "seq_len": [short, long],
        }


def open_latent_split(
    data: str | os.PathLike, tokenizer_run: str | os.PathLike, held_out: float, split_seed: int
) -> LatentSplit:
    """Open ``data``, check its latents come from ``tokenizer_run`` and split off held-out episodes.

    Args:
        data: the dataset folder (``--data``).
        tokenizer_run: the tokenizer run folder the latents must come from.
        held_out: fraction of episodes held out.
        split_seed: seed of the episode split.
    Returns:
        The checked, split dataset.
    Raises:
        ValueError: the latents do not match (see :func:`check_latents`) or there are fewer than 2
            episodes.
    """
    from lol_dreamer.checkpoint import load_run_config
    from lol_dreamer.data import open_dataset
    from lol_dreamer.models.tokenizer_config import TokenizerConfig

    tok_cfg = TokenizerConfig.from_dict(load_run_config(tokenizer_run)["model"])
    dataset = open_dataset(data)
    ident = check_latents(dataset, tokenizer_run, tok_cfg.n_z, tok_cfg.d_z)
    if len(dataset) < 2:
        raise ValueError(
            f"{data} has {len(dataset)} episode; at least 2 are needed (one is held out)"
        )
    train, held = dataset.split(held_out=held_out, seed=split_seed)
    return LatentSplit(data, tok_cfg, ident, dataset, train, held, held_out, split_seed)


def batch_lengths(lengths: np.ndarray, context: int, long: int | None) -> tuple[int, int]:
    """Short and long batch lengths that fit the episodes: ``(min(context, L), min(long, L))``.

    ``L`` is the longest episode; ``long`` defaults to twice the context.
    """
    longest = int(np.max(lengths)) if len(lengths) else 0
    if longest < 2:
        raise ValueError(
            "episodes need at least 2 frames to train dynamics; collect longer episodes"
        )
    long = min(long or 2 * context, longest)
    return min(context, long), long


def held_out_eval(
    objective: Callable[[nn.Module, dict, int], Any],
    batches: list[dict[str, torch.Tensor]],
    seed: int = 1234,
    prefix: str = "",
    shuffled_actions: bool = False,
) -> Callable[[nn.Module, int], dict[str, float]]:
    """An ``eval_fn`` that averages the objective's loss and raw terms over fixed held-out batches.

    The objective's random draws (noise levels, noise) come from a forked RNG seeded with ``seed``,
    so every evaluation sees the same draws and training randomness is untouched.

    Args:
        objective: the training objective.
        batches: held-out batches (drawn once).
        seed: RNG seed of every evaluation.
        prefix: prepended to every returned name.
        shuffled_actions: also evaluate every batch with its action sequences rolled by one
            across the batch (each sequence gets another's actions) under the same draws, and
            report that flow term as ``flow_shuffled`` and ``action_gain = flow_shuffled / flow −
            1``: how much worse the model predicts without its own actions (0 = it ignores them).
    Returns:
        ``eval_fn(model, step) -> {"loss": ..., "<term>": ...}``.
    """

    def eval_fn(model: nn.Module, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        sums: dict[str, float] = {}
        devices = [device] if device.type == "cuda" else []

        def add(name: str, v: Any) -> None:
            x = float(v.detach().float() if isinstance(v, torch.Tensor) else v)
            sums[name] = sums.get(name, 0.0) + x

        def rng_state() -> tuple[Tensor, list[Tensor]]:  # the draws on CPU and on the device
            return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]

        def set_rng_state(state: tuple[Tensor, list[Tensor]]) -> None:
            torch.set_rng_state(state[0])
            for d, st in zip(devices, state[1], strict=True):
                torch.cuda.set_rng_state(st, d)

        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for i, batch in enumerate(batches):
                b = {
                    k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
                }
                before = rng_state()
                out = objective(model, b, i)
                for k, v in {"loss": out.loss, **out.terms}.items():
                    add(k, v)
                if shuffled_actions and b.get("actions") is not None and len(b["actions"]) > 1:
                    after = rng_state()
                    set_rng_state(before)  # the same levels and noise, other actions
                    shuf = objective(model, {**b, "actions": b["actions"].roll(1, 0)}, i)
                    add("flow_shuffled", shuf.terms["flow"])
                    set_rng_state(after)
        res = {k: v / max(1, len(batches)) for k, v in sums.items()}
        if "flow_shuffled" in res and res.get("flow", 0.0) > 0.0:
            res["action_gain"] = res["flow_shuffled"] / res["flow"] - 1.0
        return {f"{prefix}{k}": v for k, v in res.items()}

    return eval_fn


@dataclass
class NextFramePrediction:
    """One-step predictions of each sequence's last latent (see :func:`predict_next_frame`).

    All ``[B, n, c]`` float, in the model's normalised latent scale.
    """

    pred: Tensor  # with the true actions
    pred_shuffled: Tensor  # with the actions of the next sequence in the batch
    target: Tensor  # the true last latent
    last: Tensor  # the clean latent before it (the copy-last guess)


@torch.no_grad()
def predict_next_frame(
    model: nn.Module,
    batch: dict[str, Tensor],
    generator: torch.Generator,
    tau_ctx_idx: int | None = None,
    tau_last_idx: int = 0,
) -> NextFramePrediction | None:
    """Predict each sequence's last latent in one step from a history at the context level.

    Every frame but the last enters at ``tau_ctx_idx`` (default the sampler's τ_ctx) with fresh
    noise from ``generator`` (one ``randn`` of the latents' shape), the last at ``tau_last_idx``
    (default 0, pure noise) with the finest step d_min; at τ = 0 the model's x-prediction is its
    single best guess of the next frame, the situation of every dreamed frame. Returns None for
    sequences shorter than 2 frames.
    """
    from lol_dreamer.models.dynamics import shift_actions
    from lol_dreamer.objectives.shortcut import model_latents

    cfg = model.cfg
    device = next(model.parameters()).device
    z = model_latents(model, batch["latents"].to(device))
    b, t = z.shape[:2]
    if t < 2:
        return None
    acts = batch["actions"].to(device).long()
    lab = batch.get("labeled")
    lab = torch.ones(b, t, dtype=torch.bool) if lab is None else lab.bool()
    acts, lab = shift_actions(acts, lab.to(device))
    tau = torch.full((b, t), cfg.tau_ctx_idx if tau_ctx_idx is None else tau_ctx_idx, device=device)
    tau[:, -1] = tau_last_idx
    tf = (tau.float() / cfg.k_max)[..., None, None]
    z_in = (1 - tf) * torch.randn(z.shape, generator=generator).to(device) + tf * z
    st = torch.full((b, t), cfg.step_idx_min, device=device)
    pred = model(z_in, tau, st, acts, lab).z1[:, -1].float()
    shuf = model(z_in, tau, st, acts.roll(1, 0), lab).z1[:, -1].float()
    return NextFramePrediction(pred, shuf, z[:, -1].float(), z[:, -2].float())


def next_frame_eval(
    batches: list[dict[str, torch.Tensor]],
    seed: int = 4321,
    prefix: str = "",
    tau_ctx_idx: int | None = None,
) -> Callable[[nn.Module, int], dict[str, float]]:
    """An ``eval_fn`` for a dynamics model: predict each held-out sequence's last latent in one step
    (:func:`predict_next_frame`) and compare with copying the last latent. Mean squared errors in
    the model's normalised latent scale (unit variance per entry):

    - ``next_frame_mse``: the model's prediction with the true actions;
    - ``next_frame_mse_shuffled``: with each sequence's actions rolled to the next sequence;
    - ``copy_last_mse``: copying the last clean context latent (no model);
    - ``next_frame_ratio``: ``next_frame_mse / copy_last_mse`` (below 1: better than copying).

    Args:
        batches: held-out batches with ``latents [B, T, n, c]`` (T ≥ 2), ``actions`` and
            ``labeled`` in stored alignment.
        seed: seed of the context noise (the same at every evaluation).
        prefix: prepended to every returned name.
        tau_ctx_idx: the history's signal level on the τ grid (default the sampler's τ_ctx).
    """

    def eval_fn(model: nn.Module, step: int) -> dict[str, float]:
        g = torch.Generator(device="cpu").manual_seed(seed)
        sums = {"next_frame_mse": 0.0, "next_frame_mse_shuffled": 0.0, "copy_last_mse": 0.0}
        n = 0
        for batch in batches:
            p = predict_next_frame(model, batch, g, tau_ctx_idx)
            if p is None:
                continue
            b = p.target.shape[0]
            sums["next_frame_mse"] += float((p.pred - p.target).pow(2).mean()) * b
            sums["next_frame_mse_shuffled"] += float((p.pred_shuffled - p.target).pow(2).mean()) * b
            sums["copy_last_mse"] += float((p.last - p.target).pow(2).mean()) * b
            n += b
        res = {k: v / max(n, 1) for k, v in sums.items()}
        res["next_frame_ratio"] = res["next_frame_mse"] / max(res["copy_last_mse"], 1e-12)
        return {f"{prefix}{k}": v for k, v in res.items()}

    return eval_fn


def combine_evals(
    *fns: Callable[[nn.Module, int], dict[str, float]],
) -> Callable[[nn.Module, int], dict[str, float]]:
    """One ``eval_fn`` returning the union of several."""

    def eval_fn(model: nn.Module, step: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for f in fns:
            out.update(f(model, step))
        return out

    return eval_fn
