"""Autoregressive generation with K shortcut steps per frame and a KV-cached time window (SPEC §6).

Per new frame at time position ``p``:

1. start from pure noise (τ = 0) and take K Euler steps of size ``d = 1/K`` in τ, each from the
   model's x-prediction ``ẑ1``: ``x ← x + d·(ẑ1 − x)/(1 − τ)``; these passes read the cache only;
2. re-noise the generated frame to the context level τ_ctx = 58/64 with fresh noise,
   ``(1 − τ_ctx)·noise + τ_ctx·z``, and run it once more labelled ``(τ_ctx, d_min)``; this pass writes
   the frame's time-layer keys/values into the cache (K + 1 passes per frame). Context frames given to
   :meth:`Sampler.start` are noised and labelled the same way.

Latents enter and leave in the tokenizer's scale; inside, the sampler works in the model's
normalised scale (:meth:`DynamicsModel.normalize_latents`), where the noise above is defined.

The cache keeps ``context - 1`` past frames per stream, so the cost and memory of a frame do not grow
with the rollout; positions increase monotonically per stream (also across :meth:`Sampler.reset_streams`).
The uncached path (``use_cache=False``) stores the noisy context entries instead and recomputes them
in every denoising pass, drawing the same noise. Recomputing the last ``context`` frames (the default,
what a cache-less live loop does) equals the cached path while the rollout fits in the window; with
``uncached_window=None`` it recomputes the whole history with the same windowed attention and equals
the cached path at any length (``tests/test_sampler.py``). Beyond the window the two differ because
a cached frame keeps the keys/values it had when written, which saw up to ``context - 1`` frames
before it.

Random draws per :meth:`Sampler.step`, in order, all from ``generator``: the initial noise
``[N, n_z, d_z]``, then the context noise ``[N, n_z, d_z]``. :meth:`Sampler.start` draws the context
noise ``[N, C, n_z, d_z]`` when a context is given. A generator must live on the model's device.

Dimension letters: ``N`` streams, ``C`` context frames, ``n`` = n_z, ``c`` = d_z.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from lol_dreamer.actions import ACTION_DIM
from lol_dreamer.kv_cache import KVCache
from lol_dreamer.models.dynamics import DynamicsModel, FilterState, shift_actions

_PAD_POS = -(10**9)  # position of left padding in the uncached history: outside every window


@dataclass
class _History:
    """Uncached path: the noisy context entries each stream has written, left-padded."""

    z: Tensor  # N L n c (already noised to τ_ctx)
    actions: Tensor  # N L 9 (slot-aligned)
    labeled: Tensor  # N L
    pos: Tensor  # N L


@dataclass
class SamplerState:
    """State of ``N`` rollouts.

    Attributes:
        pos: ``[N]`` long, time position of the next frame of each stream.
        task: ``[N]`` long or None.
        cache: the time-layer cache (cached path) or None.
        history: the stored noisy context (uncached path) or None.
        agent: agent-token features ``[N, S_g, dim]`` of the last written frame, or None.
        filter_state: ``kalman_skip`` models, cached path: the latent filter's state after the
            last written frame (``(mean, var)``, each ``[N, n_z, d_z]``); None before the first.
    """

    pos: Tensor
    task: Tensor | None
    cache: KVCache | None
    history: _History | None
    agent: Tensor | None = None
    filter_state: FilterState | None = None

    @property
    def n_streams(self) -> int:
        return self.pos.shape[0]


class Sampler:
    """K-step shortcut sampler for a :class:`DynamicsModel`.

    Args:
        model: the dynamics model (put in eval mode by the caller).
        k: denoising steps per frame; must divide ``k_max`` and be a power of two.
        context: frames the time layers see (default ``model.cfg.context``).
        dtype: ``torch.float32`` or ``torch.bfloat16`` (autocast; the latent state stays fp32).
        use_cache: False recomputes the window every pass (the reference path).
        uncached_window: frames the uncached path recomputes (default ``context``; None = the whole
            history, which matches the cached path exactly at any rollout length).

    Example:
        >>> s = Sampler(model, k=4)
        >>> state = s.start(ctx_latents, ctx_actions)
        >>> z_next, agent = s.step(state, actions)
    """

    def __init__(
        self,
        model: DynamicsModel,
        k: int = 4,
        context: int | None = None,
        dtype: torch.dtype = torch.float32,
        use_cache: bool = True,
        uncached_window: int | str | None = "context",
    ) -> None:
        cfg = model.cfg
        if k < 1 or cfg.k_max % k or k & (k - 1):
            raise ValueError(f"k={k} must be a power of two dividing k_max={cfg.k_max}")
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.model, self.k, self.dtype, self.use_cache = model, k, dtype, use_cache
        self.context = context or cfg.context
        self.uncached_window = self.context if uncached_window == "context" else uncached_window
        self.step_idx = int(math.log2(k))
        self.tau_ctx_idx = cfg.tau_ctx_idx
        self.tau_ctx = self.tau_ctx_idx / cfg.k_max

    @property
    def device(self) -> torch.device:
        return self.model.latent_mean.device  # a buffer: cheaper than walking the parameters

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        return torch.randn(shape, generator=generator, device=self.device)

    def _renoise(self, z: Tensor, generator: torch.Generator | None) -> Tensor:
        """Context entry at τ_ctx: ``(1 − τ_ctx)·noise + τ_ctx·z`` with fresh noise."""
        return (1 - self.tau_ctx) * self._noise(tuple(z.shape), generator) + self.tau_ctx * z

    def _labels(self, n: int, t: int, tau_idx: int, step_idx: int) -> tuple[Tensor, Tensor]:
        full = torch.full((n, t), tau_idx, dtype=torch.long, device=self.device)
        return full, torch.full((n, t), step_idx, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def start(
        self,
        context_latents: Tensor | None = None,
        context_actions: Tensor | None = None,
        context_labeled: Tensor | None = None,
        task: Tensor | None = None,
        n_streams: int | None = None,
        generator: torch.Generator | None = None,
        start_pos: Tensor | None = None,
    ) -> SamplerState:
        """Begin ``N`` rollouts from a context, or empty (the first frame is generated from noise).

        Args:
            context_latents: ``[N, C, n_z, d_z]`` clean latents or None.
            context_actions: ``[N, C, 9]`` in stored alignment (``[:, c]`` taken after frame c; the
                last row is not used: the action after the last context frame goes to :meth:`step`).
                None = unlabeled.
            context_labeled: ``[N, C]`` bool (default all True when actions are given).
            task: ``[N]`` long task ids for agent tokens.
            n_streams: number of streams when no context is given.
            generator: random source for the context noise.
            start_pos: ``[N]`` long time position of the first context frame (default 0).
        Returns:
            A :class:`SamplerState`.
        """
        cfg, dev = self.model.cfg, self.device
        if context_latents is None:
            if n_streams is None:
                raise ValueError(
                    "give context_latents [N, C, n_z, d_z] or n_streams for an empty start"
                )
            n = n_streams
        else:
            n = context_latents.shape[0]
            if context_latents.dim() != 4 or context_latents.shape[2:] != (cfg.n_z, cfg.d_z):
                raise ValueError(
                    f"context_latents must be [N, C, {cfg.n_z}, {cfg.d_z}], got {tuple(context_latents.shape)}"
                )
        task = task.to(dev).long().clone() if task is not None else None
        first = (
            torch.zeros(n, dtype=torch.long, device=dev)
            if start_pos is None
            else start_pos.to(dev).long().clone()
        )
        state = SamplerState(
            pos=first,
            task=task,
            cache=KVCache(n, cfg.tokens_per_frame, self.context - 1) if self.use_cache else None,
            history=None,
        )
        if not self.use_cache:
            state.history = _History(
                z=torch.zeros(n, 0, cfg.n_z, cfg.d_z, device=dev),
                actions=torch.zeros(n, 0, ACTION_DIM, dtype=torch.long, device=dev),
                labeled=torch.zeros(n, 0, dtype=torch.bool, device=dev),
                pos=torch.zeros(n, 0, dtype=torch.long, device=dev),
            )
        if context_latents is None:
            return state
        c = context_latents.shape[1]
        if context_actions is None:
            acts = torch.zeros(n, c, ACTION_DIM, dtype=torch.long, device=dev)
            lab = torch.zeros(n, c, dtype=torch.bool, device=dev)
        else:
            if context_actions.shape != (n, c, ACTION_DIM):
                raise ValueError(
                    f"context_actions must be [{n}, {c}, 9], got {tuple(context_actions.shape)}"
                )
            acts = context_actions.to(dev).long()
            lab = (
                context_labeled.to(dev).bool()
                if context_labeled is not None
                else torch.ones(n, c, dtype=torch.bool, device=dev)
            )
        acts, lab = shift_actions(acts, lab)
        ctx = self._renoise(self.model.normalize_latents(context_latents.to(dev)), generator)
        positions = first[:, None] + torch.arange(c, device=dev)
        state.agent = self._write(state, ctx, acts, lab, positions)
        state.pos = first + c
        return state

    def _write(
        self, state: SamplerState, ctx: Tensor, acts: Tensor, lab: Tensor, positions: Tensor
    ) -> Tensor | None:
        """Enter noisy context frames ``[N, t, n, c]`` (labelled τ_ctx, d_min); returns agent features."""
        n, t = ctx.shape[:2]
        tau, step = self._labels(n, t, self.tau_ctx_idx, self.model.cfg.step_idx_min)
        if self.use_cache:
            with self._autocast():
                out = self.model(
                    ctx,
                    tau,
                    step,
                    acts,
                    lab,
                    state.task,
                    cache=state.cache,
                    positions=positions,
                    window=self.context,
                    filter_state=state.filter_state,
                )
            state.filter_state = out.filter_state
            return None if out.agent is None else out.agent[:, -1].float()
        h = state.history
        assert h is not None
        state.history = _History(
            z=torch.cat((h.z, ctx), 1),
            actions=torch.cat((h.actions, acts), 1),
            labeled=torch.cat((h.labeled, lab), 1),
            pos=torch.cat((h.pos, positions), 1),
        )
        if not self.model.cfg.n_agent:
            return None
        return self._uncached_pass(state, None, None, None, None, None)[1]

    def _filter_before(
        self, h: _History, first: int, next_pos: Tensor | None
    ) -> FilterState | None:
        """Uncached path: the latent filter's state after history frame ``first − 1`` (the frame
        before the recomputed window), or None when there is none or the model has no filter."""
        if first == 0 or not self.model.cfg.kalman_skip or next_pos is None:
            return None
        tau = torch.full(h.pos[:, :first].shape, self.tau_ctx_idx, device=self.device)
        _, _, (m, p) = self.model.filter_latents(h.z[:, :first], tau, h.pos[:, :first])
        broken = (h.pos[:, first - 1] != next_pos - 1)[:, None, None]
        m0, p0 = self.model.filter_prior(m.shape[0], self.device)
        return torch.where(broken, m0, m), torch.where(broken, p0, p)

    def _uncached_pass(
        self,
        state: SamplerState,
        x: Tensor | None,
        act: Tensor | None,
        lab: Tensor | None,
        tau_idx: int | None,
        pos: Tensor | None,
        reuse: dict | None = None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Run the model on the stored window (plus frame ``x`` when given); return its outputs."""
        h = state.history
        assert h is not None
        w = self.uncached_window
        length = h.z.shape[1]
        first = 0 if w is None else max(0, length - (w - (x is not None)))
        z, a, lb, p = h.z[:, first:], h.actions[:, first:], h.labeled[:, first:], h.pos[:, first:]
        n, t = z.shape[:2]
        before = self._filter_before(h, first, p[:, 0] if t else pos)
        tau, step = self._labels(n, t, self.tau_ctx_idx, self.model.cfg.step_idx_min)
        if x is not None:
            assert act is not None and lab is not None and tau_idx is not None and pos is not None
            tn, sn = self._labels(n, 1, tau_idx, self.step_idx)
            z, a, lb, p = (
                torch.cat((z, x[:, None]), 1),
                torch.cat((a, act[:, None]), 1),
                torch.cat((lb, lab[:, None]), 1),
                torch.cat((p, pos[:, None]), 1),
            )
            tau, step = torch.cat((tau, tn), 1), torch.cat((step, sn), 1)
        with self._autocast():
            out = self.model(
                z, tau, step, a, lb, state.task, positions=p, window=self.context, reuse=reuse,
                filter_state=before,
            )  # fmt: skip
        agent = None if out.agent is None else out.agent[:, -1].float()
        return out.z1[:, -1].float(), agent

    @torch.no_grad()
    def step(
        self,
        state: SamplerState,
        actions: Tensor | None = None,
        labeled: Tensor | None = None,
        generator: torch.Generator | None = None,
        on_frame: Callable[[Tensor], None] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Generate the next frame of every stream.

        Args:
            state: from :meth:`start`; updated in place.
            actions: ``[N, 9]`` long, the action taken at the last frame (it enters the new frame's
                slot); None = unlabeled (e.g. the very first frame of an empty start).
            labeled: ``[N]`` bool (default all True when actions are given).
            generator: random source (initial noise, then context noise).
            on_frame: called with the new latents ``[N, n_z, d_z]`` (the returned tensor) as soon as
                the K denoising passes end, before the pass that enters the frame into the cache, so
                a caller can start decoding it on another thread meanwhile. It must not modify them.
        Returns:
            ``(z_next [N, n_z, d_z] fp32, agent [N, S_g, dim] | None)``; the agent features come from
            the pass that writes the new frame as context.
        """
        cfg, dev, n = self.model.cfg, self.device, state.n_streams
        if actions is None:
            act = torch.zeros(n, ACTION_DIM, dtype=torch.long, device=dev)
            lab = torch.zeros(n, dtype=torch.bool, device=dev)
        else:
            if actions.shape != (n, ACTION_DIM):
                raise ValueError(
                    f"actions must be [{n}, 9] = [movement, 8 keys], got {tuple(actions.shape)}"
                )
            act = actions.to(dev).long()
            lab = (
                labeled.to(dev).bool()
                if labeled is not None
                else torch.ones(n, dtype=torch.bool, device=dev)
            )
        pos = state.pos
        x = self._noise((n, cfg.n_z, cfg.d_z), generator)
        d = 1.0 / self.k
        stride = cfg.k_max // self.k
        # The K passes share the cache contents, positions, actions and task: the model keeps what
        # depends only on those (time mask, time RoPE, action tokens) in ``reuse`` after the first.
        reuse: dict = {}
        view = state.cache.read_only() if state.cache is not None else None
        act1, lab1, pos1 = act[:, None], lab[:, None], pos[:, None]
        for i in range(self.k):
            tau_idx = i * stride
            if self.use_cache:
                tau, step = self._labels(n, 1, tau_idx, self.step_idx)
                with self._autocast():
                    out = self.model(
                        x[:, None],
                        tau,
                        step,
                        act1,
                        lab1,
                        state.task,
                        cache=view,
                        positions=pos1,
                        window=self.context,
                        reuse=reuse,
                        filter_state=state.filter_state,
                    )
                z1 = out.z1[:, 0]
                z1 = z1 if z1.dtype == torch.float32 else z1.float()
            else:
                z1, _ = self._uncached_pass(state, x, act, lab, tau_idx, pos, reuse)
            # Euler step in τ along the x-prediction velocity (ẑ1 − x)/(1 − τ).
            x = x + (z1 - x) * (d / (1.0 - tau_idx / cfg.k_max))
        z_out = self.model.denormalize_latents(x)
        if on_frame is not None:
            on_frame(z_out)
        ctx = self._renoise(x, generator)
        state.agent = self._write(state, ctx[:, None], act1, lab1, pos1)
        state.pos = pos + 1
        return z_out, state.agent

    @torch.no_grad()
    def reset_streams(
        self,
        state: SamplerState,
        mask: Tensor,
        context_latents: Tensor | None = None,
        context_actions: Tensor | None = None,
        context_labeled: Tensor | None = None,
        task: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SamplerState:
        """Restart the streams where ``mask [N]`` is True; the others continue untouched.

        Args:
            mask: ``[N]`` bool.
            context_latents, context_actions, context_labeled, task: as in :meth:`start`, for the
                ``k = mask.sum()`` restarted streams only (leading dimension ``k``); no context
                restarts them empty.
        Returns:
            ``state`` (updated in place).
        """
        idx = mask.to(self.device).nonzero().flatten()
        if len(idx) == 0:
            return state
        if task is None and state.task is not None:
            task = state.task[idx]
        sub = self.start(
            context_latents,
            context_actions,
            context_labeled,
            task,
            n_streams=len(idx),
            generator=generator,
            start_pos=state.pos[idx],  # positions keep increasing per stream across a restart
        )
        if task is not None:
            if state.task is None:
                raise ValueError(
                    "this rollout has no task ids; start it with task=... to reset with tasks"
                )
            state.task[idx] = sub.task
        state.pos[idx] = sub.pos
        if state.filter_state is not None or sub.filter_state is not None:
            # restarted streams continue from their new context, or from no earlier frame
            prior = self.model.filter_prior(state.n_streams, self.device)
            if state.filter_state is None:
                m, p = prior
            else:
                m, p = (x.clone() for x in state.filter_state)
            if sub.filter_state is None:  # an empty restart: no earlier frame
                m[idx], p[idx] = prior[0][idx], prior[1][idx]
            else:
                m[idx], p[idx] = sub.filter_state
            state.filter_state = (m, p)
        if self.use_cache:
            assert state.cache is not None and sub.cache is not None
            state.cache.replace_streams(idx, sub.cache)
        else:
            self._replace_history(state, idx, sub)
        if sub.agent is not None and state.agent is not None:
            state.agent = state.agent.clone()  # callers may hold the previous features
            state.agent[idx] = sub.agent
        return state

    def _replace_history(self, state: SamplerState, idx: Tensor, sub: SamplerState) -> None:
        h, s = state.history, sub.history
        assert h is not None and s is not None
        length = max(h.z.shape[1], s.z.shape[1])

        def pad(x: Tensor, value: float | int) -> Tensor:
            extra = length - x.shape[1]
            if extra == 0:
                return x
            shape = (x.shape[0], extra, *x.shape[2:])
            return torch.cat((torch.full(shape, value, dtype=x.dtype, device=x.device), x), 1)

        z, a, lb, p = pad(h.z, 0.0), pad(h.actions, 0), pad(h.labeled, False), pad(h.pos, _PAD_POS)
        z[idx], a[idx], lb[idx] = pad(s.z, 0.0), pad(s.actions, 0), pad(s.labeled, False)
        p[idx] = pad(s.pos, _PAD_POS)
        state.history = _History(z=z, actions=a, labeled=lb, pos=p)

    def rollout(
        self,
        state: SamplerState,
        n_frames: int,
        actions: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[Tensor]:
        """Yield ``n_frames`` generated latents ``[N, n_z, d_z]``; ``actions [N, F, 9]`` feed the steps."""
        for f in range(n_frames):
            z, _ = self.step(state, None if actions is None else actions[:, f], generator=generator)
            yield z

    def generate(
        self,
        n_frames: int,
        context_latents: Tensor | None = None,
        context_actions: Tensor | None = None,
        actions: Tensor | None = None,
        task: Tensor | None = None,
        n_streams: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Start and roll out ``n_frames`` frames; returns ``[N, n_frames, n_z, d_z]``.

        ``actions[:, f]`` is the action taken just before generated frame ``f`` (after the previous
        frame); None = unlabeled.
        """
        state = self.start(
            context_latents, context_actions, task=task, n_streams=n_streams, generator=generator
        )
        return torch.stack(list(self.rollout(state, n_frames, actions, generator)), 1)
