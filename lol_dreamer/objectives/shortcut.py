"""Shortcut forcing with x-prediction and diffusion forcing (SPEC §6; DreamerV4 §3.2, arXiv 2509.24527).

Signal level τ ∈ [0, 1): 0 is pure noise, 1 is clean; ``z̃ = (1 − τ)·z0 + τ·z1`` with noise z0.
Each frame draws its own step size ``d = 1/k``, ``k ∈ {1, 2, 4, …, k_max}``, and its own τ on the
grid of multiples of d below 1. The model predicts the clean latents ẑ1 (x-prediction); its velocity
is ``(ẑ1 − z̃)/(1 − τ)``.

- ``d = d_min = 1/k_max`` (flow term): ``‖ẑ1 − z1‖²``.
- ``d > d_min`` (bootstrap term): two half steps ``d/2`` of the stop-gradient model from z̃ give
  velocities b′ and b″; the loss is ``(1 − τ)²·‖(ẑ1 − z̃)/(1 − τ) − sg(b′ + b″)/2‖²``.
- Every term is weighted by ``w(τ) = 0.9·τ + 0.1``.

``‖·‖²`` is the mean over the latent's ``n_z·d_z`` entries. The total is the mean of the weighted
per-frame terms over all frames; ``terms["flow"]`` / ``terms["bootstrap"]`` are the means of the
weighted terms over the frames that have each (0 when none).

In the teacher passes every bootstrap frame of a sequence takes its half step at once while flow
frames keep their inputs, so later frames read earlier ones at the teacher's levels; this is how
diffusion forcing and shortcut targets combine in a single sequence forward.

Dimension letters: ``b`` sequences, ``t`` frames, ``n`` = n_z, ``c`` = d_z.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lol_dreamer.models.dynamics import shift_actions
from lol_dreamer.training.config import LossOutput

__all__ = [
    "LossOutput",
    "ShortcutConfig",
    "ShortcutObjective",
    "context_prefix",
    "model_latents",
    "ramp_weight",
    "sample_levels",
    "sequence_length",
    "shortcut_loss",
]


@dataclass
class ShortcutConfig:
    """Shortcut-forcing settings.

    Attributes:
        k_max: finest step count (must match the model's ``k_max``).
        independent_frac: fraction of sequences trained as independent images (no time attention,
            no actions), which teaches start-frame generation.
        short_len: frames per sequence on even steps (None: no alternation). A batch of length T is
            cut into ``T // short_len`` sequences, so short steps see more, shorter sequences.
        long_len: frames per sequence on odd steps (None: the batch's own length); should exceed
            the model's ``context`` so the windowed time attention is exercised.
        flow_frac: probability of the finest step per frame (None: k uniform over the grid; see
            :func:`sample_levels`).
        context_frac: fraction of the (non-independent) sequences whose frames before a random cut
            are set to the sampler's context level τ_ctx (flow term), so the frame after the cut is
            predicted from nearly clean history exactly as in generation (see
            :func:`context_prefix`). 0 = pure diffusion forcing, DreamerV4's choice.
    """

    k_max: int = 64
    independent_frac: float = 0.3
    short_len: int | None = None
    long_len: int | None = None
    flow_frac: float | None = None
    context_frac: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.context_frac <= 1.0:
            raise ValueError(
                f"context_frac must be a probability in [0, 1], got {self.context_frac}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShortcutConfig:
        return cls(**d)


def model_latents(model: nn.Module, latents: Tensor) -> Tensor:
    """Tokenizer latents → the scale the model is trained in (its ``normalize_latents`` when it has one)."""
    norm = getattr(model, "normalize_latents", None)
    return norm(latents) if norm is not None else latents.float()


def ramp_weight(tau: Tensor) -> Tensor:
    """Loss weight ``w(τ) = 0.9·τ + 0.1`` (DreamerV4 §3.2 shortcut forcing, arXiv 2509.24527)."""
    return 0.9 * tau + 0.1


def sample_levels(
    shape: tuple[int, ...],
    k_max: int,
    generator: torch.Generator | None = None,
    device: Any = None,
    flow_frac: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw a step size and a signal level for every frame (diffusion forcing).

    ``k = 2^step_idx`` uniform over ``{1, 2, 4, …, k_max}`` and ``d = 1/k``; τ uniform over
    ``{0, d, 2d, …, 1 − d}``. Draws ``step_idx`` first, then τ.

    Args:
        shape: e.g. ``(b, t)``.
        k_max: power of two.
        flow_frac: None draws k uniformly (DreamerV4's choice); a probability p gives the finest
            step ``d_min`` (the flow term, the only one anchored to the data) probability p and
            spreads ``1 − p`` uniformly over the coarser steps (the shortcut-models paper,
            Frans et al. 2024, trains 3/4 of each batch on the flow term).
    Returns:
        ``(tau_idx, step_idx)`` long tensors of ``shape``; τ = tau_idx / k_max, d = 2^-step_idx.
    """
    levels = int(math.log2(k_max)) + 1
    if flow_frac is None:
        step_idx = torch.randint(0, levels, shape, generator=generator, device=device)
    else:
        if not 0.0 <= flow_frac <= 1.0:
            raise ValueError(f"flow_frac must be a probability in [0, 1], got {flow_frac}")
        coarse = torch.randint(0, max(levels - 1, 1), shape, generator=generator, device=device)
        flow = torch.rand(shape, generator=generator, device=device) < flow_frac
        step_idx = torch.where(flow, torch.full_like(coarse, levels - 1), coarse)
    k = 2**step_idx
    j = (torch.rand(shape, generator=generator, device=device) * k).long().clamp(max=k - 1)
    return j * (k_max // k), step_idx


def context_prefix(
    tau_idx: Tensor,
    step_idx: Tensor,
    frac: float,
    k_max: int,
    eligible: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Give a fraction of the sequences a nearly clean history, as the sampler's context has.

    With probability ``frac`` a sequence draws a cut ``c`` uniform in ``{1, …, t − 1}``; its frames
    before ``c`` get τ_ctx (the grid point nearest 0.9, the level generated frames enter the cache
    at) and the finest step d_min, and the frames from ``c`` on keep their diffusion-forcing levels.
    Under independent levels alone the frame before a noisy one is itself noisy most of the time,
    so the case generation meets at every step (clean history, noisy next frame, the action in
    between deciding where things move) is rare in training; this makes it common.

    Args:
        tau_idx, step_idx: ``[b, t]`` long levels from :func:`sample_levels`.
        frac: probability per sequence.
        k_max: finest step count.
        eligible: ``[b]`` bool; sequences that may get a prefix (None = all).
    Returns:
        New ``(tau_idx, step_idx)``.
    """
    b, t = tau_idx.shape
    if frac <= 0.0 or t < 2:
        return tau_idx, step_idx
    dev = tau_idx.device
    pick = torch.rand(b, generator=generator, device=dev) < frac
    if eligible is not None:
        pick = pick & eligible
    cut = torch.randint(1, t, (b,), generator=generator, device=dev)
    prefix = pick[:, None] & (torch.arange(t, device=dev)[None, :] < cut[:, None])
    ctx_idx = round(0.9 * k_max)
    step_min = int(math.log2(k_max))
    return (
        torch.where(prefix, torch.full_like(tau_idx, ctx_idx), tau_idx),
        torch.where(prefix, torch.full_like(step_idx, step_min), step_idx),
    )


def sequence_length(step: int, short_len: int, long_len: int) -> int:
    """Alternating batches: ``short_len`` on even steps, ``long_len`` on odd steps."""
    return short_len if step % 2 == 0 else long_len


def _velocity(z1_hat: Tensor, z: Tensor, tau: Tensor) -> Tensor:
    """Velocity of an x-prediction, ``(ẑ1 − z̃)/(1 − τ)``; ``tau`` is ``[b, t]``."""
    return (z1_hat - z) / (1 - tau)[..., None, None]


def shortcut_loss(
    model: nn.Module,
    z1: Tensor,
    z0: Tensor,
    tau_idx: Tensor,
    step_idx: Tensor,
    actions: Tensor | None = None,
    labeled: Tensor | None = None,
    task: Tensor | None = None,
    independent: Tensor | None = None,
    k_max: int = 64,
) -> LossOutput:
    """The shortcut-forcing loss for given levels and noise (all randomness is the caller's).

    Args:
        model: called as ``model(z, tau_idx, step_idx, actions, labeled, task=, independent=)`` and
            returning an object with ``.z1`` (a :class:`~lol_dreamer.models.dynamics.DynamicsModel`).
        z1: ``[b, t, n, c]`` clean latents.
        z0: ``[b, t, n, c]`` noise.
        tau_idx: ``[b, t]`` long, τ = tau_idx / k_max, a multiple of the frame's d, below 1.
        step_idx: ``[b, t]`` long, d = 2^-step_idx.
        actions, labeled: slot-aligned actions ``[b, t, 9]`` and mask ``[b, t]``.
        task: ``[b]`` long or None.
        independent: ``[b]`` bool or None (sequences whose frames are independent images).
        k_max: finest step count.
    Returns:
        :class:`LossOutput` with ``terms`` ``flow`` and ``bootstrap`` and ``metrics``.
    """
    step_min = int(math.log2(k_max))
    tau = tau_idx.float() / k_max  # b t
    d = 2.0 ** (-step_idx.float())  # b t
    z_t = (1 - tau)[..., None, None] * z0 + tau[..., None, None] * z1  # b t n c
    flow = step_idx == step_min  # b t
    boot = ~flow

    def run(z: Tensor, ti: Tensor, si: Tensor) -> Tensor:
        return model(z, ti, si, actions, labeled, task=task, independent=independent).z1.float()

    pred = run(z_t, tau_idx, step_idx)  # b t n c
    w = ramp_weight(tau)
    flow_err = (pred - z1).pow(2).mean((-1, -2))  # b t
    per_frame = torch.where(flow, flow_err, torch.zeros_like(flow_err))
    boot_err = torch.zeros_like(flow_err)
    if bool(boot.any()):
        with torch.no_grad():
            # DreamerV4 §3.2 (arXiv 2509.24527): bootstrap target from two half steps in velocity space.
            half_idx = torch.where(boot, step_idx + 1, step_idx)
            b1 = _velocity(run(z_t, tau_idx, half_idx), z_t, tau)
            half = (d / 2)[..., None, None]
            z_mid = torch.where(boot[..., None, None], z_t + b1 * half, z_t)
            tau_mid_idx = torch.where(
                boot, tau_idx + (k_max >> (step_idx + 1).clamp(max=step_min)), tau_idx
            )
            tau_mid = tau_mid_idx.float() / k_max
            b2 = _velocity(run(z_mid, tau_mid_idx, half_idx), z_mid, tau_mid)
            target = (b1 + b2) / 2
        v = _velocity(pred, z_t, tau)
        boot_err = (1 - tau).pow(2) * (v - target).pow(2).mean((-1, -2))
        per_frame = torch.where(boot, boot_err, per_frame)
    weighted = w * per_frame
    loss = weighted.mean()
    n_flow, n_boot = flow.sum(), boot.sum()
    zero = weighted.new_zeros(())
    flow_term = (weighted * flow).sum() / n_flow if n_flow > 0 else zero
    boot_term = (weighted * boot).sum() / n_boot if n_boot > 0 else zero
    metrics = {
        "frac_bootstrap": float(n_boot) / boot.numel(),
        "flow_mse": float((flow_err.detach() * flow).sum() / n_flow) if n_flow > 0 else 0.0,
        "bootstrap_mse": float((boot_err.detach() * boot).sum() / n_boot) if n_boot > 0 else 0.0,
    }
    return LossOutput(
        loss=loss,
        terms={"flow": flow_term.detach(), "bootstrap": boot_term.detach()},
        metrics=metrics,
    )


class ShortcutObjective:
    """Trainer objective ``objective(model, batch, step) -> LossOutput`` for phase 1b.

    The batch holds ``latents [B, T, n_z, d_z]``, ``actions [B, T, 9]`` in stored alignment
    (``actions[t]`` taken after frame t; shifted here so slot t carries a_{t-1}), ``labeled [B, T]``
    and optionally ``task [B]``. The latents are first put in the model's normalised scale
    (:func:`model_latents`). Per step: alternate short/long sequences, mark
    ``independent_frac`` of the sequences as independent images (their actions are dropped), draw
    levels (giving ``context_frac`` of the others a clean history, :func:`context_prefix`) and
    noise, and return :func:`shortcut_loss`.

    Example:
        >>> obj = ShortcutObjective(ShortcutConfig(short_len=8, long_len=24))
        >>> out = obj(model, batch, step=0)   # doctest: +SKIP
    """

    def __init__(self, cfg: ShortcutConfig | None = None) -> None:
        self.cfg = cfg or ShortcutConfig()

    def __call__(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> LossOutput:
        cfg = self.cfg
        model_cfg = getattr(model, "cfg", None)
        if model_cfg is not None and getattr(model_cfg, "k_max", cfg.k_max) != cfg.k_max:
            raise ValueError(
                f"ShortcutConfig.k_max={cfg.k_max} differs from the model's k_max={model_cfg.k_max}; "
                "build the objective with the model's k_max"
            )
        z1 = model_latents(model, batch["latents"])
        b, t = z1.shape[:2]
        actions = batch.get("actions")
        labeled = batch.get("labeled")
        if actions is None:
            actions = torch.zeros(b, t, 9, dtype=torch.long, device=z1.device)
            labeled = torch.zeros(b, t, dtype=torch.bool, device=z1.device)
        elif labeled is None:
            labeled = torch.ones(b, t, dtype=torch.bool, device=z1.device)
        actions, labeled = shift_actions(actions.long(), labeled.bool())
        task = batch.get("task")
        length = t
        if cfg.short_len is not None and cfg.long_len is not None:
            length = min(t, sequence_length(step, cfg.short_len, cfg.long_len))
        elif cfg.long_len is not None:
            length = min(t, cfg.long_len)
        if length < t:
            chunks = t // length
            cut = chunks * length

            def split(x: Tensor) -> Tensor:
                return x[:, :cut].reshape(b * chunks, length, *x.shape[2:])

            z1, actions, labeled = split(z1), split(actions), split(labeled)
            if task is not None:
                task = task.repeat_interleave(chunks)
        n = z1.shape[0]
        independent = torch.rand(n, device=z1.device) < cfg.independent_frac
        labeled = labeled & ~independent[:, None]
        tau_idx, step_idx = sample_levels(
            (n, z1.shape[1]), cfg.k_max, device=z1.device, flow_frac=cfg.flow_frac
        )
        if cfg.context_frac > 0.0:
            tau_idx, step_idx = context_prefix(
                tau_idx, step_idx, cfg.context_frac, cfg.k_max, eligible=~independent
            )
        z0 = torch.randn_like(z1)
        out = shortcut_loss(
            model, z1, z0, tau_idx, step_idx, actions, labeled, task, independent, k_max=cfg.k_max
        )
        out.metrics["seq_len"] = float(z1.shape[1])
        out.metrics["frac_independent"] = float(independent.float().mean())
        return out
