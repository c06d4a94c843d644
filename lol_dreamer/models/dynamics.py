"""Action-conditioned dynamics transformer (SPEC §6; DreamerV4 §3.2, arXiv 2509.24527).

Every frame is a group of interleaved tokens::

    [ S_a action | 1 (τ, d) | S_z spatial latent | S_r register | S_g agent ]

Space layers attend within a frame; every ``time_every``-th layer is a time layer that attends
causally across frames, separately for each token slot, within a window of ``context`` frames.
Agent tokens read everything; nothing reads agent tokens (space-layer mask; time layers are per slot,
so an agent slot only ever meets its own slot across time).

The model predicts the clean latents (x-prediction) of every frame from noisy latents at signal level
``τ = tau_idx / k_max`` (0 = pure noise, 1 = clean) labelled with step size ``d = 2^-step_idx``. It
knows nothing of shortcut forcing (``lol_dreamer/objectives/shortcut.py``) or of cache policy
(``lol_dreamer/sampler.py``): it only reads and appends time-layer keys/values through a ``TimeCache``.

Latent scale: the tokenizer's latents are far from unit variance (the CNN tokenizer's per-entry
std over time is ≈ 0.09 against unit diffusion noise, so at τ_ctx the context would be as noisy as
it is informative). The model therefore works on *normalised* latents ``(z − mean) / std`` with a
per-entry ``mean``/``std [n_z, d_z]`` measured on the training latents and stored as persistent
buffers (``latent_mean``, ``latent_std``) in its weights. Callers that noise latents (the shortcut
objective, phase 2, the sampler) call :meth:`DynamicsModel.normalize_latents` first, and the sampler
returns :meth:`DynamicsModel.denormalize_latents` of its output, so the tokenizer sees its own scale.
Fresh models hold the identity (mean 0, std 1) until :meth:`DynamicsModel.set_latent_stats`.
``DynamicsConfig.latent_scale`` multiplies the standardised latents: a scale above 1 makes the
diffusion noise, and with it the context noise at τ_ctx, smaller next to what changes between frames.

Action alignment: slot ``t`` carries the action ``a_{t-1}`` that led to frame ``t``. Callers pass
actions already shifted; :func:`shift_actions` turns stored alignment (``actions[t]`` taken after
frame ``t``) into slot alignment (slot 0 is unlabeled).

Dimension letters: ``b`` batch, ``t`` frames, ``s`` tokens per frame, ``d`` model width,
``n`` latent tokens ``n_z``, ``c`` latent channels ``d_z``, ``g`` key/value heads, ``e`` head width,
``m`` keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lol_dreamer.actions import ACTION_DIM, N_KEYS, N_MOVE
from lol_dreamer.config_utils import strict_from_dict
from lol_dreamer.models.layers import Block, RMSNorm, additive_mask, rope_angles, rope_tables


@dataclass
class DynamicsConfig:
    """Dynamics transformer hyper-parameters.

    Attributes:
        n_z: latent tokens per frame from the tokenizer.
        d_z: channels per latent token.
        dim: model width.
        depth: number of transformer blocks.
        heads: query heads.
        kv_heads: key/value heads (grouped-query attention on every layer).
        time_every: every ``time_every``-th block (1-based) is a causal time layer.
        s_z: spatial tokens; the ``n_z·d_z`` latent numbers are split into ``s_z`` equal groups,
            each linearly projected to one token.
        s_r: register tokens per frame.
        s_a: action tokens per frame.
        n_agent: agent tokens per frame (0 = none; phase 2 sets > 0).
        n_tasks: size of the task embedding that feeds agent tokens.
        context: frames a time layer sees (the current frame and ``context - 1`` before it).
        k_max: finest step count; τ lives on the grid ``{0, 1/k_max, ..., 1}``.
        softcap: attention logit soft cap.
        mlp_mult: SwiGLU hidden width as a multiple of ``dim``.
        precondition: form the x-prediction as ``c_skip(τ)·z̃ + c_out(τ)·F`` from the network output
            ``F`` (see :func:`precondition_coefficients`); the prediction, the loss and the sampler
            are unchanged, but a fresh network already returns the best linear estimate of the clean
            latents, so it learns far faster. The presets set it; configs without the key keep the
            plain ``ẑ1 = F`` they were trained with.
        kalman_skip: extend the preconditioning over time: the skip term becomes the filtered
            estimate of the clean latents from this frame's *and all earlier frames'* noisy latents,
            a per-entry Kalman filter under an AR(1) prior whose frame-to-frame correlation
            ``latent_rho`` is measured on the training latents (:func:`filter_latents`), and
            ``c_out`` its standard deviation. Consecutive frames are nearly equal, so a fresh
            network already predicts "the last frames, denoised" and learns only what changes.
            Needs ``precondition``; the prediction is still the clean latents (x-prediction), the
            loss is unchanged, and the filter's state travels with the sampler's cache.
        zero_init_out: start the latent output projection at zero, so a fresh preconditioned
            network predicts exactly its skip term (the filtered latents with ``kalman_skip``)
            instead of the skip plus random output noise. Initialisation only: loading weights is
            unaffected.
    """

    n_z: int = 64
    d_z: int = 16
    dim: int = 128
    depth: int = 8
    heads: int = 4
    kv_heads: int = 2
    time_every: int = 4
    s_z: int = 16
    s_r: int = 2
    s_a: int = 1
    n_agent: int = 0
    n_tasks: int = 3
    context: int = 16
    k_max: int = 64
    softcap: float = 50.0
    mlp_mult: float = 8 / 3
    precondition: bool = False
    kalman_skip: bool = False
    latent_scale: float = 1.0
    zero_init_out: bool = False

    def __post_init__(self) -> None:
        if not self.latent_scale > 0:
            raise ValueError(f"latent_scale must be positive, got {self.latent_scale}")
        if self.kalman_skip and not self.precondition:
            raise ValueError("kalman_skip extends the preconditioning; set precondition=True too")
        if (self.n_z * self.d_z) % self.s_z:
            raise ValueError(
                f"n_z*d_z = {self.n_z * self.d_z} must divide into s_z = {self.s_z} spatial tokens; "
                "pick s_z among the divisors of n_z*d_z"
            )
        if self.k_max < 1 or self.k_max & (self.k_max - 1):
            raise ValueError(f"k_max must be a power of two, got {self.k_max}")
        if self.context < 1:
            raise ValueError(f"context must be at least 1 frame, got {self.context}")
        if not any(self._is_time(i) for i in range(self.depth)):
            raise ValueError(
                f"depth={self.depth} with time_every={self.time_every} has no time layer; "
                "use depth >= time_every"
            )

    def _is_time(self, i: int) -> bool:
        return (i + 1) % self.time_every == 0

    @property
    def time_layers(self) -> tuple[int, ...]:
        """Indices of the time layers."""
        return tuple(i for i in range(self.depth) if self._is_time(i))

    @property
    def tokens_per_frame(self) -> int:
        return self.s_a + 1 + self.s_z + self.s_r + self.n_agent

    @property
    def n_step_levels(self) -> int:
        """Number of step sizes ``d = 2^-i``, ``i = 0..log2(k_max)``."""
        return int(math.log2(self.k_max)) + 1

    @property
    def step_idx_min(self) -> int:
        """``step_idx`` of the finest step ``d_min = 1/k_max``."""
        return self.n_step_levels - 1

    @property
    def tau_ctx_idx(self) -> int:
        """Grid index of τ_ctx, the grid point nearest 0.9."""
        return round(0.9 * self.k_max)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DynamicsConfig:
        return strict_from_dict(cls, d)

    @classmethod
    def preset(
        cls, name: str, n_z: int | None = None, d_z: int | None = None, **overrides: Any
    ) -> DynamicsConfig:
        """Named sizes; ``n_z``/``d_z`` come from the tokenizer.

        Args:
            name: ``test``, ``nano``, ``tiny``, ``small``, ``medium`` or ``large``.
            n_z, d_z: the tokenizer's latent shape; None takes it from the tokenizer preset of the
                same name (``TokenizerConfig.preset(name)``).
            overrides: any other :class:`DynamicsConfig` field.

        Every preset preconditions the x-prediction with the Kalman skip and ``latent_scale`` 3
        unless ``overrides`` say otherwise. ``test`` is for CI; ``nano`` (~1.6 M parameters)
        generates interactively on one CPU core; ``tiny``/``small``/``medium``/``large`` land near
        5 M / 39 M / 129 M / 306 M parameters.
        """
        presets: dict[str, dict[str, Any]] = {
            "test": dict(
                dim=32, depth=4, heads=2, kv_heads=1, time_every=2, s_z=4, s_r=1, context=8
            ),
            "nano": dict(dim=128, depth=8, heads=4, kv_heads=2, s_z=16, s_r=2, context=16),
            "tiny": dict(dim=240, depth=8, heads=4, kv_heads=2, s_z=32, s_r=4, context=32),
            "small": dict(dim=480, depth=16, heads=8, kv_heads=2, s_z=64, s_r=4, context=64),
            "medium": dict(dim=768, depth=20, heads=12, kv_heads=4, s_z=128, s_r=8, context=64),
            "large": dict(dim=1024, depth=28, heads=16, kv_heads=4, s_z=256, s_r=8, context=64),
        }
        if name not in presets:
            raise ValueError(f"unknown dynamics preset {name!r}; choose one of {sorted(presets)}")
        if n_z is None or d_z is None:
            from lol_dreamer.models.tokenizer_config import TokenizerConfig

            tok = TokenizerConfig.preset(name)
            n_z, d_z = n_z or tok.n_z, d_z or tok.d_z
        kw = {"precondition": True, **presets[name], **overrides}
        # the measured recipe (benchmarks/RESULTS.md, "a skip connection through time"): the
        # Kalman skip on standardised latents scaled by 3; plain x-prediction keeps neither
        kw.setdefault("kalman_skip", kw["precondition"])
        kw.setdefault("latent_scale", 3.0 if kw["kalman_skip"] else 1.0)
        s_z = kw["s_z"]
        while (n_z * d_z) % s_z:  # keep s_z a divisor of n_z*d_z for unusual tokenizer shapes
            s_z //= 2
        kw["s_z"] = max(s_z, 1)
        return cls(n_z=n_z, d_z=d_z, **kw)


FilterState = tuple[Tensor, Tensor]
"""Latent filter state ``(mean, var)``, each ``[b, n_z, d_z]`` fp32 (:func:`filter_latents`)."""


class TimeCache(Protocol):
    """What the model needs from a key/value cache for its time layers (policy lives elsewhere).

    ``get`` returns the cached keys/values of earlier frames, ``k, v [b*s, g, m, e]`` (already
    RoPE-rotated at their own positions), their positions ``[b, m]`` and a validity mask
    ``[b, m]``; ``append`` receives the new frames' keys/values ``[b*s, g, t, e]`` and positions
    ``[b, t]`` after the layer has attended.
    """

    def get(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor] | None: ...

    def append(self, layer: int, k: Tensor, v: Tensor, positions: Tensor) -> None: ...


@dataclass
class DynamicsOutput:
    """``z1 [b,t,n,c]`` clean-latent prediction, ``agent [b,t,S_g,d]`` or None, ``hidden [b,t,s,d]``;
    ``filter_state`` is the latent filter's state after the last frame (``kalman_skip`` models)."""

    z1: Tensor
    agent: Tensor | None
    hidden: Tensor
    filter_state: FilterState | None = None


def shift_actions(actions: Tensor, labeled: Tensor) -> tuple[Tensor, Tensor]:
    """Stored alignment (``actions[t]`` taken after frame t) → slot alignment (slot t holds a_{t-1}).

    Args:
        actions: ``[b, t, 9]`` long.
        labeled: ``[b, t]`` bool.
    Returns:
        ``(actions [b,t,9], labeled [b,t])``; slot 0 is unlabeled (its action is unknown).
    """
    a = torch.zeros_like(actions)
    a[:, 1:] = actions[:, :-1]
    lab = torch.zeros_like(labeled, dtype=torch.bool)
    lab[:, 1:] = labeled[:, :-1].bool()
    return a, lab


class ActionEmbedding(nn.Module):
    """SPEC §2: learned base + 19-way movement lookup + one lookup per key, summed.

    Unlabeled frames get the base embedding alone.
    """

    def __init__(self, dim: int, n_tokens: int) -> None:
        super().__init__()
        self.n_tokens, self.dim = n_tokens, dim
        self.base = nn.Parameter(torch.randn(n_tokens, dim) * 0.02)
        self.move = nn.Embedding(N_MOVE, n_tokens * dim)
        self.keys = nn.Embedding(2 * N_KEYS, n_tokens * dim)  # key i, value v -> row 2i + v
        nn.init.normal_(self.move.weight, std=0.02)
        nn.init.normal_(self.keys.weight, std=0.02)
        self.register_buffer("key_offset", torch.arange(N_KEYS) * 2, persistent=False)

    def forward(self, actions: Tensor, labeled: Tensor) -> Tensor:
        """``actions [b,t,9]`` long, ``labeled [b,t]`` bool → ``[b,t,S_a,d]``."""
        if actions.shape[-1] != ACTION_DIM:
            raise ValueError(
                f"actions must end in {ACTION_DIM} = [movement, 8 keys], got {tuple(actions.shape)}"
            )
        move = actions[..., 0].clamp(0, N_MOVE - 1)
        keys = actions[..., 1:].clamp(0, 1) + self.key_offset
        emb = self.move(move) + self.keys(keys).sum(-2)  # b t (s_a d)
        emb = emb * labeled[..., None].to(emb.dtype)
        return self.base + rearrange(emb, "b t (s d) -> b t s d", s=self.n_tokens)


class DynamicsModel(nn.Module):
    """Block-causal dynamics transformer over frames of interleaved tokens.

    Example:
        >>> cfg = DynamicsConfig.preset("test", n_z=8, d_z=4)
        >>> m = DynamicsModel(cfg)
        >>> z = torch.randn(2, 3, 8, 4)
        >>> tau = torch.full((2, 3), 32); step = torch.full((2, 3), cfg.step_idx_min)
        >>> a = torch.zeros(2, 3, 9, dtype=torch.long); lab = torch.ones(2, 3, dtype=torch.bool)
        >>> m(z, tau, step, a, lab).z1.shape
        torch.Size([2, 3, 8, 4])
    """

    def __init__(self, cfg: DynamicsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, d = cfg, cfg.dim
        self.group = c.n_z * c.d_z // c.s_z
        self.action_emb = ActionEmbedding(d, c.s_a)
        self.tau_emb = nn.Embedding(c.k_max + 1, d)
        self.step_emb = nn.Embedding(c.n_step_levels, d)
        nn.init.normal_(self.tau_emb.weight, std=0.02)
        nn.init.normal_(self.step_emb.weight, std=0.02)
        self.z_in = nn.Linear(self.group, d)
        self.registers = nn.Parameter(torch.randn(c.s_r, d) * 0.02)
        if c.n_agent:
            self.agent_tokens = nn.Parameter(torch.randn(c.n_agent, d) * 0.02)
            self.task_emb = nn.Embedding(c.n_tasks, d)
            nn.init.normal_(self.task_emb.weight, std=0.02)
        self.blocks = nn.ModuleList(
            Block(d, c.heads, c.kv_heads, c.mlp_mult, softcap=c.softcap) for _ in range(c.depth)
        )
        self.is_time = [c._is_time(i) for i in range(c.depth)]
        self.grad_checkpointing = False
        self.norm = RMSNorm(d)
        self.z_out = nn.Linear(d, self.group)
        if c.zero_init_out:
            nn.init.zeros_(self.z_out.weight)
            nn.init.zeros_(self.z_out.bias)
        s = c.tokens_per_frame
        self.z_slice = slice(c.s_a + 1, c.s_a + 1 + c.s_z)
        self.agent_slice = slice(s - c.n_agent, s)
        # Space mask: True = may attend. Non-agent queries never see agent keys.
        mask = torch.ones(s, s, dtype=torch.bool)
        mask[: s - c.n_agent, s - c.n_agent :] = False
        self.register_buffer("space_mask", mask, persistent=False)
        self.head_dim = d // c.heads
        space_cos, space_sin = rope_angles(
            torch.arange(s), self.head_dim
        )  # s e/2, shared by layers
        self.register_buffer("space_cos", space_cos, persistent=False)
        self.register_buffer("space_sin", space_sin, persistent=False)
        # The same mask and angles in the forms the layers use directly (additive mask, full-width
        # RoPE tables): built once here instead of in every layer of every pass.
        self.register_buffer("space_bias", additive_mask(mask), persistent=False)
        space_rope = rope_tables(space_cos, space_sin)  # s e
        self.register_buffer("space_rope_cos", space_rope[0], persistent=False)
        self.register_buffer("space_rope_sin", space_rope[1], persistent=False)
        # Latent normalisation (module docstring): saved with the weights, identity until set.
        self.register_buffer("latent_mean", torch.zeros(c.n_z, c.d_z))
        self.register_buffer("latent_std", torch.ones(c.n_z, c.d_z))
        if c.kalman_skip:  # frame-to-frame correlation of the normalised latents; 0 until set
            self.register_buffer("latent_rho", torch.zeros(c.n_z, c.d_z))

    @torch.no_grad()
    def set_latent_stats(
        self, mean: Tensor, std: Tensor, rho: Tensor | None = None, min_std: float = 1e-3
    ) -> None:
        """Store the per-entry latent ``mean``/``std`` ``[n_z, d_z]`` (``std`` floored at ``min_std``)
        and, for ``kalman_skip`` models, the frame-to-frame correlation ``rho [n_z, d_z]`` of the
        normalised latents (clamped to [0, 0.999]; None leaves it)."""
        shape = (self.cfg.n_z, self.cfg.d_z)
        if tuple(mean.shape) != shape or tuple(std.shape) != shape:
            raise ValueError(
                f"latent stats must be {list(shape)}, got mean {list(mean.shape)} and std {list(std.shape)}"
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("latent stats contain NaN or Inf; check the tokenized dataset")
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_(std.float().clamp_min(min_std))
        if rho is not None and self.cfg.kalman_skip:
            if tuple(rho.shape) != shape or not torch.isfinite(rho).all():
                raise ValueError(f"latent rho must be a finite {list(shape)} tensor")
            self.latent_rho.copy_(rho.float().clamp(0.0, 0.999))

    def normalize_latents(self, z: Tensor) -> Tensor:
        """Tokenizer latents ``[..., n_z, d_z]`` → the model's scale ``(z − mean) / std · latent_scale``
        (fp32)."""
        return (z.float() - self.latent_mean) / self.latent_std * self.cfg.latent_scale

    def denormalize_latents(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`normalize_latents`: the model's scale → tokenizer latents (fp32)."""
        return z.float() / self.cfg.latent_scale * self.latent_std + self.latent_mean

    @property
    def config(self) -> DynamicsConfig:
        return self.cfg

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in backward (training without a cache only)."""
        self.grad_checkpointing = enabled

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(
        self,
        z: Tensor,
        tau_idx: Tensor,
        step_idx: Tensor,
        actions: Tensor,
        labeled: Tensor,
        task: Tensor | None,
        reuse: dict[str, Any] | None = None,
    ) -> Tensor:
        """Interleaved per-frame tokens ``[b, t, s, d]``.

        ``reuse`` (see :meth:`forward`) keeps the action, register and agent tokens, which do not
        depend on the latents or the signal level.
        """
        c = self.cfg
        b, t = z.shape[:2]
        cond = None if reuse is None else reuse.get("cond")
        if cond is None:
            a = self.action_emb(actions, labeled)  # b t s_a d
            tail = [self.registers.expand(b, t, -1, -1)]
            if c.n_agent:
                g = self.agent_tokens.expand(b, t, -1, -1)
                if task is not None:
                    g = g + self.task_emb(task)[:, None, None]
                tail.append(g)
            cond = (a, tail)
            if reuse is not None:
                reuse["cond"] = cond
        a, tail = cond
        td = (self.tau_emb(tau_idx) + self.step_emb(step_idx))[:, :, None]  # b t 1 d
        zs = F.linear(z.reshape(b, t, c.s_z, self.group), self.z_in.weight, self.z_in.bias)
        dt = zs.dtype
        parts = [a.to(dt), td.to(dt), zs, *(x.to(dt) for x in tail)]
        return torch.cat(parts, dim=2)

    def forward(
        self,
        z: Tensor,
        tau_idx: Tensor,
        step_idx: Tensor,
        actions: Tensor | None = None,
        labeled: Tensor | None = None,
        task: Tensor | None = None,
        cache: TimeCache | None = None,
        positions: Tensor | None = None,
        independent: Tensor | None = None,
        window: int | None = None,
        reuse: dict[str, Any] | None = None,
        filter_state: FilterState | None = None,
    ) -> DynamicsOutput:
        """Predict clean latents for every frame.

        Args:
            z: ``[b, t, n_z, d_z]`` noisy latents ``(1 − τ)·noise + τ·z_clean`` in the model's
                normalised scale (:meth:`normalize_latents`).
            tau_idx: ``[b, t]`` long in ``0..k_max`` (τ = tau_idx / k_max).
            step_idx: ``[b, t]`` long in ``0..log2(k_max)`` (d = 2^-step_idx).
            actions: ``[b, t, 9]`` long, slot-aligned (slot t holds a_{t-1}); None = all unlabeled.
            labeled: ``[b, t]`` bool; None = all labeled when ``actions`` is given.
            task: ``[b]`` long task ids feeding the agent tokens (ignored without agent tokens).
            cache: time-layer key/value cache; earlier frames are read from it and the new frames'
                keys/values appended to it.
            positions: ``[t]`` or ``[b, t]`` long time positions (default ``0..t-1``); needed with a
                cache so new frames sit after the cached ones.
            independent: ``[b]`` bool; True treats that sequence's frames as independent images
                (time layers see only the frame itself).
            window: frames a time layer sees (default ``cfg.context``).
            reuse: a dict the caller passes, unchanged, to consecutive calls that differ only in
                ``z``, ``tau_idx`` and ``step_idx`` (same cache contents, positions, actions,
                labels, task, independence and window; e.g. the K denoising passes of one frame):
                the first call stores there what depends only on those (time mask, time RoPE,
                action/register/agent tokens) and the others reuse it. Outputs are unchanged.
            filter_state: ``kalman_skip`` models only: the latent filter's state after the frame
                just before ``z[:, 0]`` (the ``filter_state`` of the output that entered it, e.g. the
                last cached frame); None = no earlier frame. Later frames continue the filter from
                the frame before them when their positions are consecutive.
        Returns:
            :class:`DynamicsOutput`.
        """
        cfg = self.cfg
        b, t, n, ch = z.shape
        if (n, ch) != (cfg.n_z, cfg.d_z):
            raise ValueError(f"latents must be [b, t, {cfg.n_z}, {cfg.d_z}], got {tuple(z.shape)}")
        if actions is None:
            actions = torch.zeros(b, t, ACTION_DIM, dtype=torch.long, device=z.device)
            labeled = torch.zeros(b, t, dtype=torch.bool, device=z.device)
        elif labeled is None:
            labeled = torch.ones(b, t, dtype=torch.bool, device=z.device)
        if positions is None:
            if cache is not None:
                raise ValueError(
                    "pass positions with a cache so new frames sit after the cached ones"
                )
            positions = torch.arange(t, device=z.device)
        if positions.dim() == 1:
            positions = positions.expand(b, t)
        window = window or cfg.context

        x = self.embed(z, tau_idx, step_idx, actions, labeled, task, reuse)  # b t s d
        s = x.shape[2]
        space_mask = self.space_bias if cfg.n_agent else None
        space_rope = (self.space_rope_cos, self.space_rope_sin)
        time_rope = None if reuse is None else reuse.get("time_rope")
        if time_rope is None:
            cos, sin = rope_tables(*time_rope_angles(positions, self.head_dim))  # b t e
            time_rope = (
                cos.repeat_interleave(s, dim=0),
                sin.repeat_interleave(s, dim=0),
            )  # (b s) t e
            if reuse is not None:
                reuse["time_rope"] = time_rope
        # Built at the first time layer, shared by the others (and by later calls via ``reuse``).
        time_mask: list[Tensor | None] = [] if reuse is None else reuse.setdefault("time_mask", [])
        for i, blk in enumerate(self.blocks):
            if self.is_time[i]:
                x = self._time_layer(
                    i, blk, x, positions, cache, independent, window, time_rope, time_mask
                )
            else:
                xs = x.reshape(b * t, s, x.shape[3])  # (b t) s d
                if self.grad_checkpointing and torch.is_grad_enabled():
                    xs, _ = checkpoint(
                        blk, xs, None, space_mask, None, space_rope, use_reentrant=False
                    )
                else:
                    xs, _ = blk(xs, mask=space_mask, rope=space_rope)
                x = xs.view(b, t, s, xs.shape[2])
        h = self.norm(x)
        zo = self.z_out(h[:, :, self.z_slice])  # b t s_z group
        z1 = zo.reshape(b, t, n * ch).view(b, t, n, ch)
        state_out = None
        if cfg.kalman_skip:
            mean, var, state_out = self.filter_latents(
                z, tau_idx, positions, independent, filter_state
            )
            z1 = mean + var.sqrt() * z1.float()  # fp32: the skip carries the fine detail
        elif cfg.precondition:
            c_skip, c_out = precondition_coefficients(tau_idx.float() / cfg.k_max, cfg.latent_scale)
            z1 = c_skip[..., None, None] * z.to(z1.dtype) + c_out[..., None, None] * z1
        agent = h[:, :, self.agent_slice] if cfg.n_agent else None
        assert h.shape[2] == s
        return DynamicsOutput(z1=z1, agent=agent, hidden=h, filter_state=state_out)

    def filter_prior(self, n: int, device: torch.device | str | None = None) -> FilterState:
        """The filter state of ``n`` streams with no earlier frame: mean 0, variance ``latent_scale²``
        (the normalised latents' stationary variance), each ``[n, n_z, d_z]`` fp32."""
        shape = (n, self.cfg.n_z, self.cfg.d_z)
        m = torch.zeros(shape, device=device)
        return m, torch.full_like(m, self.cfg.latent_scale**2)

    def filter_latents(
        self,
        z: Tensor,
        tau_idx: Tensor,
        positions: Tensor | None = None,
        independent: Tensor | None = None,
        state: FilterState | None = None,
    ) -> tuple[Tensor, Tensor, FilterState]:
        """The ``kalman_skip`` estimate of every frame's clean latents (:func:`filter_latents`).

        Frame ``i > 0`` continues from frame ``i − 1`` when its position is one more (left padding
        and restarts break the chain); frame 0 continues from ``state``; independent sequences
        start afresh at every frame. Returns ``(mean, var) [b, t, n, c]`` and the final state.
        """
        b, t = z.shape[:2]
        reset = torch.zeros(b, t, dtype=torch.bool, device=z.device)
        if state is None:
            reset[:, 0] = True
        if positions is not None and t > 1:
            pos = positions.expand(b, t) if positions.dim() == 1 else positions
            reset[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
        if independent is not None:
            reset = reset | independent.bool()[:, None]
        tau = tau_idx.float() / self.cfg.k_max
        return filter_latents(z, tau, self.latent_rho, reset, state, self.cfg.latent_scale**2)

    def _time_layer(
        self,
        i: int,
        blk: nn.Module,
        x: Tensor,
        pos: Tensor,
        cache: TimeCache | None,
        independent: Tensor | None,
        window: int,
        rope: tuple[Tensor, Tensor],
        memo: list[Tensor | None],
    ) -> Tensor:
        """Causal, windowed attention across frames for every token slot separately.

        Every time layer of a cache holds the same frames, so the mask is built once per forward
        (``memo``) from the first time layer's view of the cache.
        """
        b, t, s, d = x.shape
        xs = x.transpose(1, 2).reshape(b * s, t, d)  # (b s) t d
        past = cache.get(i) if cache is not None else None
        past_kv = (past[0], past[1]) if past is not None else None
        if not memo:
            mask = self._time_mask(pos, past, independent, window, s)
            memo.append(None if mask is None else additive_mask(mask))
        if self.grad_checkpointing and torch.is_grad_enabled() and cache is None:
            xs, (k_new, v_new) = checkpoint(blk, xs, None, memo[0], None, rope, use_reentrant=False)
        else:
            xs, (k_new, v_new) = blk(xs, mask=memo[0], past_kv=past_kv, rope=rope)
        if cache is not None:
            cache.append(i, k_new, v_new, pos)
        return xs.view(b, s, t, d).transpose(1, 2)

    @staticmethod
    def _time_mask(
        pos: Tensor,
        past: tuple[Tensor, Tensor, Tensor, Tensor] | None,
        independent: Tensor | None,
        window: int,
        s: int,
    ) -> Tensor | None:
        """``[(b s), 1, t, m]`` bool: key frame within ``(q − window, q]``, valid, and the frame itself
        for independent sequences; None when a single frame has nothing to attend to but itself."""
        t = pos.shape[1]
        if past is None and t == 1:
            return None
        if past is not None:
            kpos = torch.cat((past[2], pos), dim=1)  # b m
            kvalid = torch.cat((past[3], torch.ones_like(pos, dtype=torch.bool)), dim=1)
        else:
            kpos, kvalid = pos, None
        q, k = pos[:, :, None], kpos[:, None, :]
        mask = (k <= q) & (k > q - window)  # b t m
        if kvalid is not None:
            mask = mask & kvalid[:, None, :]
        if independent is not None:
            mask = mask & ((k == q) | ~independent[:, None, None])
        return mask.repeat_interleave(s, dim=0)[:, None]


def precondition_coefficients(tau: Tensor, sigma: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(c_skip, c_out)`` of the preconditioned x-prediction ``ẑ1 = c_skip·z̃ + c_out·F``.

    For latents of standard deviation ``sigma`` (1 unless ``latent_scale`` says otherwise) and
    ``z̃ = (1 − τ)·z0 + τ·z1``, ``c_skip = τσ² / (τ²σ² + (1 − τ)²)`` makes ``c_skip·z̃`` the
    least-squares linear estimate of ``z1`` from ``z̃``, and
    ``c_out = (1 − τ)σ / √(τ²σ² + (1 − τ)²)`` is that estimate's residual standard deviation, so the
    network's own target ``(z1 − c_skip·z̃)/c_out`` has unit variance at every τ (the input/output
    scaling of EDM, Karras et al. 2022, written for this interpolation). τ = 0 gives ``ẑ1 = σ·F``;
    τ → 1 gives ``ẑ1 → z̃``.
    """
    var = sigma * sigma
    norm = tau.square() * var + (1 - tau).square()
    return tau * var / norm, (1 - tau) * sigma / norm.sqrt()


def filter_latents(
    z: Tensor,
    tau: Tensor,
    rho: Tensor,
    reset: Tensor | None = None,
    state: FilterState | None = None,
    var0: float = 1.0,
) -> tuple[Tensor, Tensor, FilterState]:
    """Per-entry Kalman filter of clean latents from noisy frames (``kalman_skip``).

    Model: latents of variance ``var0`` follow ``x_t = ρ·x_{t−1} + √(1 − ρ²)·w_t`` (``w_t`` of
    variance ``var0``) per entry and frame
    ``t`` is observed as ``z̃_t = τ_t·x_t + (1 − τ_t)·ε_t`` (white ``w``, ``ε``). The filtered mean
    is the least-squares linear estimate of ``x_t`` from ``z̃_1..z̃_t`` and ``var`` its error
    variance. With no earlier frame (``reset``) the prior is ``(0, var0)`` and the result is the
    one-frame preconditioning (:func:`precondition_coefficients`).

    Args:
        z: ``[b, t, n, c]`` noisy latents (normalised scale).
        tau: ``[b, t]`` signal levels in [0, 1].
        rho: ``[n, c]`` frame-to-frame correlation (below 1).
        reset: ``[b, t]`` bool, True where a frame has no earlier frame (frame 0 also resets when
            ``state`` is None).
        state: the filter state after the frame before ``z[:, 0]``, or None.
        var0: the latents' stationary variance (``latent_scale²``).
    Returns:
        ``(mean, var) [b, t, n, c]`` fp32 and the state after the last frame.
    """
    b, t = z.shape[:2]
    rho = rho.float()
    rho2 = rho.square()
    if state is None:
        m = torch.zeros(b, *z.shape[2:], device=z.device)
        p = torch.full_like(m, var0)
        if reset is None:
            reset = torch.zeros(b, t, dtype=torch.bool, device=z.device)
        reset = reset.clone()
        reset[:, 0] = True
    else:
        m, p = state[0].float(), state[1].float()
    means, variances = [], []
    for i in range(t):
        m_pri, p_pri = rho * m, rho2 * p + (1 - rho2) * var0
        if reset is not None:
            r = reset[:, i, None, None]
            m_pri = torch.where(r, torch.zeros_like(m_pri), m_pri)
            p_pri = torch.where(r, torch.full_like(p_pri, var0), p_pri)
        a = tau[:, i, None, None].float()
        gain = p_pri * a / (a.square() * p_pri + (1 - a).square())
        m = m_pri + gain * (z[:, i].float() - a * m_pri)
        p = (1 - gain * a) * p_pri
        means.append(m)
        variances.append(p)
    return torch.stack(means, 1), torch.stack(variances, 1).clamp_min(0.0), (m, p)


def time_rope_angles(
    positions: Tensor, head_dim: int, base: float = 10000.0
) -> tuple[Tensor, Tensor]:
    """RoPE ``(cos, sin)`` ``[..., e/2]`` for time positions, exact at any position.

    Rollouts keep increasing positions forever; float32 ``position × frequency`` loses the angle
    once positions reach ~10^6, so angles are formed in float64 and reduced modulo 2π first (float32
    where the device has no float64, e.g. MPS). Same values as ``layers.rope_angles`` otherwise.
    """
    if positions.device.type == "mps":
        return rope_angles(positions, head_dim, base)
    inv_freq = base ** (
        -torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim
    )
    ang = torch.remainder(positions.double().unsqueeze(-1) * inv_freq, 2 * math.pi).float()
    return ang.cos(), ang.sin()


def _float_tensor(x: Any) -> Tensor:
    """A latent slice (tensor, array or memory map) as an fp32 tensor."""
    return (x if isinstance(x, Tensor) else torch.from_numpy(np.array(x))).float()


@torch.no_grad()
def latent_stats(latents: Sequence[Any] | Tensor, max_frames: int = 20000) -> tuple[Tensor, Tensor]:
    """Per-entry ``(mean, std) [n_z, d_z]`` of latents ``[T, n_z, d_z]`` (one tensor, or a list of
    per-episode tensors or arrays).

    At most ``max_frames`` frames, taken evenly spaced over the concatenation, enter the estimate.
    """
    eps = [latents] if isinstance(latents, Tensor) else list(latents)
    total = sum(int(e.shape[0]) for e in eps)
    if total < 2:
        raise ValueError(f"need at least 2 latent frames to measure their scale, got {total}")
    stride = max(1, total // max_frames)
    parts, offset = [], 0
    for e in eps:  # same frames as slicing the concatenation with [::stride]
        first = (-offset) % stride
        parts.append(_float_tensor(e[first::stride]))
        offset += int(e.shape[0])
    z = torch.cat(parts)
    return z.mean(0), z.std(0)


@torch.no_grad()
def latent_rho(
    latents: Sequence[Any] | Tensor, mean: Tensor, std: Tensor, max_pairs: int = 20000
) -> Tensor:
    """Per-entry correlation ``[n_z, d_z]`` of consecutive normalised latents ``(z − mean)/std``
    within each episode (one tensor ``[T, n_z, d_z]`` or a list of per-episode tensors/arrays);
    at most about ``max_pairs`` evenly spaced frame pairs enter the estimate."""
    eps = [latents] if isinstance(latents, Tensor) else list(latents)
    total = sum(max(int(e.shape[0]) - 1, 0) for e in eps)
    if total < 2:
        raise ValueError(f"need at least 2 consecutive latent pairs, got {total}")
    stride = max(1, total // max_pairs)
    std = std.clamp_min(1e-3)  # as set_latent_stats floors it; constant entries get rho 0
    cur, nxt = [], []
    for e in eps:  # slice first: only the sampled pairs are read from memory-mapped episodes
        cur.append((_float_tensor(e[:-1:stride]) - mean) / std)
        nxt.append((_float_tensor(e[1::stride]) - mean) / std)
    u, v = torch.cat(cur), torch.cat(nxt)
    u, v = u - u.mean(0), v - v.mean(0)
    r = (u * v).mean(0) / (u.std(0, unbiased=False) * v.std(0, unbiased=False)).clamp_min(1e-8)
    return torch.nan_to_num(r, nan=0.0)


def build_dynamics(model: dict[str, Any]) -> DynamicsModel:
    """Checkpoint builder: the ``model`` section of a run's ``config.json`` → :class:`DynamicsModel`."""
    return DynamicsModel(DynamicsConfig.from_dict(model))
