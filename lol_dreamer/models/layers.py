"""Transformer building blocks shared by the tokenizer and the dynamics model.

Pre-RMSNorm blocks with RoPE, SwiGLU, QK-norm, attention-logit soft-capping and grouped-query
attention (DreamerV4 §3, arXiv 2509.24527).

Dimension letters: ``b`` batch, ``n`` query tokens, ``m`` key tokens, ``h`` query heads,
``g`` key/value heads, ``e`` head width, ``d`` model width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """``x · rsqrt(mean(x²) + eps) · weight`` over the last dimension, computed in fp32."""
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)  # one fused op
        y = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return y.to(x.dtype)


def rope_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Cosines and sines for rotary embeddings.

    Args:
        positions: integer or float positions, any shape ``[...]``.
        head_dim: even head width ``e``.
    Returns:
        ``(cos, sin)``, each ``[..., e/2]`` float32.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head width, got {head_dim}")
    inv_freq = base ** (
        -torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    ang = positions.float().unsqueeze(-1) * inv_freq
    return ang.cos(), ang.sin()


def axial_rope_angles(
    positions: Tensor, head_dim: int, sections: tuple[int, ...], base: float = 10000.0
) -> tuple[Tensor, Tensor]:
    """Cosines and sines for multi-axis (e.g. time, row, column) rotary embeddings.

    The ``e/2`` rotation pairs of a head are split into ``sections`` (one count per axis); axis
    ``a`` rotates its pairs by ``positions[..., a]`` with its own frequency ladder. Angles are formed
    in float64 and reduced mod 2π, so large positions (long streams) keep full float32 precision.

    Args:
        positions: ``[..., A]`` positions, one column per axis.
        head_dim: even head width ``e``.
        sections: ``A`` pair counts summing to ``e/2``.
    Returns:
        ``(cos, sin)``, each ``[..., e/2]`` float32.
    """
    if head_dim % 2 or sum(sections) != head_dim // 2 or len(sections) != positions.shape[-1]:
        raise ValueError(
            f"axial RoPE needs an even head width and one section per axis summing to e/2; got "
            f"head_dim={head_dim}, sections={sections}, {positions.shape[-1]} position axes"
        )
    angles = []
    for a, k in enumerate(sections):
        if k == 0:
            continue
        inv_freq = base ** (-torch.arange(k, device=positions.device, dtype=torch.float64) / k)
        angles.append(positions[..., a : a + 1].double() * inv_freq)
    ang = torch.remainder(torch.cat(angles, dim=-1), 2 * math.pi).float()
    return ang.cos(), ang.sin()


def rope_tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Half-width ``(cos, sin) [..., e/2]`` → full-width ``(cos | cos, −sin | sin) [..., e]``.

    With these, a rotation is ``x·cos_full + roll(x, e/2)·sin_full`` (see :func:`apply_rope`): the
    same products and sums as the half-width form, in fewer ops. Build them once and pass them as
    ``rope`` wherever half-width tables are accepted.
    """
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x [..., e]`` by angles ``cos/sin``, half-width ``[..., e/2]`` or full-width tables
    from :func:`rope_tables` ``[..., e]``, broadcastable against ``x`` (e.g. ``[b, 1, n, ·]`` for
    ``x [b, h, n, e]``).

    Pairs ``(x1, x2)`` = (first half, second half) become ``(x1·cos − x2·sin, x2·cos + x1·sin)``.
    """
    if cos.shape[-1] * 2 == x.shape[-1]:
        cos, sin = rope_tables(cos, sin)
    xf = x if x.dtype == torch.float32 else x.float()
    # [x1, x2]·[cos, cos] + [x2, x1]·[−sin, sin]: every entry is the half-width form's product pair.
    out = torch.addcmul(xf * cos, xf.roll(x.shape[-1] // 2, dims=-1), sin)
    return out if out.dtype == x.dtype else out.to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden, bias=False)
        self.w_up = nn.Linear(dim, hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = F.linear(x, self.w_gate.weight)
        return F.linear(F.silu(gate) * F.linear(x, self.w_up.weight), self.w_down.weight)


def swiglu_hidden(dim: int, mult: float = 8 / 3, multiple_of: int = 32) -> int:
    h = int(dim * mult)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


class Attention(nn.Module):
    """Multi-head attention with GQA, QK-norm, RoPE and logit soft-capping.

    ``forward`` returns the output and the (rotated) keys/values of the *new* tokens, so a caller can
    cache them; ``past_kv`` prepends cached keys/values (already rotated at their own positions).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        qk_norm: bool = True,
        softcap: float | None = 50.0,
        rope_base: float = 10000.0,
        use_rope: bool = True,
    ) -> None:
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if dim % n_heads or n_heads % n_kv_heads:
            raise ValueError(
                f"dim={dim} must divide by n_heads={n_heads}, and n_heads by n_kv_heads={n_kv_heads}"
            )
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.softcap = softcap
        self.rope_base = rope_base
        self.use_rope = use_rope
        self.q = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.kv = nn.Linear(dim, 2 * n_kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()

    def forward(
        self,
        x: Tensor,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        past_kv: tuple[Tensor, Tensor] | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """
        Args:
            x: ``[b, n, d]``.
            positions: ``[n]`` or ``[b, n]`` RoPE positions of the new tokens.
            mask: broadcastable to ``[b, h, n, m]`` with ``m = past + n`` keys: bool (True = may
                attend) or additive float (:func:`additive_mask`); None = full attention.
            past_kv: cached ``(k, v)``, each ``[b, g, m_past, e]``.
            rope: precomputed ``(cos, sin)``, each ``[n, e/2]`` or ``[b, n, e/2]`` (e.g. from
                :func:`axial_rope_angles`), or the full-width ``[n, e]`` / ``[b, n, e]`` tables of
                :func:`rope_tables`; overrides ``positions`` when given.
        Returns:
            ``(out [b, n, d], (k_new, v_new))`` with ``k_new, v_new [b, g, n, e]``.
        """
        b, n, _ = x.shape
        q, k, v = self.project(x, positions, rope)
        new_kv = (k, v)
        if past_kv is not None:
            k = torch.cat((past_kv[0], k), dim=2)
            v = torch.cat((past_kv[1], v), dim=2)
        out = attend(q, k, v, mask, self.softcap)  # b h n e
        out = out.transpose(1, 2).reshape(b, n, self.n_heads * self.head_dim)
        return F.linear(out, self.out.weight, self.out.bias), new_kv

    def project(
        self, x: Tensor, positions: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of ``x [b, n, d]``, QK-normed and rotated (as in ``forward``).

        Lets a caller with structured sparsity run its own attention over the same projections.

        Returns:
            ``q [b, h, n, e]``, ``k, v [b, g, n, e]``.
        """
        b, n, _ = x.shape
        e, h, g = self.head_dim, self.n_heads, self.n_kv_heads
        q = F.linear(x, self.q.weight, self.q.bias).view(b, n, h, e)
        k, v = F.linear(x, self.kv.weight, self.kv.bias).view(b, n, 2, g, e).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)  # b n h e, b n g e
        if self.use_rope:
            if rope is not None:
                cos, sin = rope
            else:
                if positions is None:
                    positions = torch.arange(n, device=x.device)
                cos, sin = rope_angles(positions, e, self.rope_base)
            # [n, ·] -> [1, n, 1, ·]; [b, n, ·] -> [b, n, 1, ·] (tokens before heads here)
            cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, softcap: float | None) -> Tensor:
    """Scaled dot-product attention with soft-capped logits; ``k, v`` may have fewer heads (GQA).

    Args:
        q: ``[b, h, n, e]``.
        k, v: ``[b, g, m, e]`` with ``g`` dividing ``h`` (query head ``i`` reads key head ``i // (h/g)``).
        mask: broadcastable to ``[b, h, n, m]``; bool (True = may attend) or float (added to the
            logits: 0 = may attend, −inf = may not; see :func:`additive_mask`). None = full attention.
        softcap: logit soft cap, or None.
    Returns:
        ``[b, h, n, e]``.
    """
    b, h, n, e = q.shape
    g, m = k.shape[1], k.shape[2]
    if g != h:
        # The h/g query heads sharing a key head become extra query rows of that head: no copy of
        # the keys/values (query head i = group i // r, row (i % r)·n + query).
        q = q.reshape(b, g, (h // g) * n, e)
    scale = 1.0 / math.sqrt(e)
    # Scales folded into q (smaller than the logits): fewer elementwise passes over [n, m].
    if softcap is not None:
        logits = torch.tanh((q * (scale / softcap)) @ k.transpose(-1, -2)) * softcap
    else:
        logits = (q * scale) @ k.transpose(-1, -2)
    logits = logits.view(b, h, n, m)
    if mask is not None:
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + mask
    attn = torch.softmax(logits if logits.dtype == torch.float32 else logits.float(), dim=-1)
    attn = attn if attn.dtype == v.dtype else attn.to(v.dtype)
    if g != h:
        return (attn.view(b, g, (h // g) * n, m) @ v).view(b, h, n, e)
    return attn @ v


def additive_mask(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Bool mask (True = may attend) → additive mask (0 = may attend, −inf = may not) for :func:`attend`.

    Adding it to the logits gives exactly what ``masked_fill(~mask, −inf)`` gives; build it once
    when the same mask serves many layers or passes.
    """
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, float("-inf"))


def _to_autocast(h: Tensor) -> Tensor:
    """``h`` in the autocast dtype when autocast is on: the value each of the two matmuls reading it
    would cast it to anyway, cast once instead of twice."""
    dev = h.device.type
    if h.dtype == torch.float32 and dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        return h.to(torch.get_autocast_dtype(dev))
    return h


class Block(nn.Module):
    """Pre-RMSNorm transformer block: ``x + attn(norm(x))``, then ``x + swiglu(norm(x))``."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        mlp_mult: float = 8 / 3,
        qk_norm: bool = True,
        softcap: float | None = 50.0,
        use_rope: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, n_heads, n_kv_heads, qk_norm, softcap, use_rope=use_rope)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, swiglu_hidden(dim, mlp_mult))

    def forward(
        self,
        x: Tensor,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        past_kv: tuple[Tensor, Tensor] | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h = _to_autocast(self.norm1.forward(x))
        a, new_kv = self.attn.forward(h, positions, mask, past_kv, rope)
        x = x + a
        x = x + self.mlp.forward(_to_autocast(self.norm2.forward(x)))
        return x, new_kv
