"""A bounded key/value cache for the dynamics model's time layers.

Each stream keeps at most ``capacity`` past frames per time layer in a fixed-size buffer: a new frame
takes a free slot or overwrites that stream's oldest one, so memory never grows with the rollout.
Positions are stored per stream and only ever increase; keys are stored already RoPE-rotated at their
own positions, so attention over the cache depends only on relative positions. The model masks any
entry older than its window and any unused slot (see ``DynamicsModel._time_layer``).

Dimension letters: ``b`` streams, ``s`` tokens per frame, ``g`` key/value heads, ``m`` capacity,
``e`` head width, ``t`` new frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class _LayerKV:
    k: Tensor  # (b s) g m e
    v: Tensor  # (b s) g m e
    pos: Tensor  # b m long
    valid: Tensor  # b m bool


class KVCache:
    """Time-layer cache for ``n_streams`` parallel rollouts.

    Args:
        n_streams: batch size ``b``.
        tokens_per_frame: tokens per frame ``s`` (the model's ``cfg.tokens_per_frame``).
        capacity: past frames kept per stream; ``context - 1`` suffices for a window of ``context``
            frames (the current frame is never cached while it is being attended from).
    """

    def __init__(self, n_streams: int, tokens_per_frame: int, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.n_streams, self.tokens_per_frame, self.capacity = n_streams, tokens_per_frame, capacity
        self.layers: dict[int, _LayerKV] = {}

    def get(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """``(k, v, positions [b, m], valid [b, m])`` of ``layer``, or None when nothing is cached."""
        kv = self.layers.get(layer)
        if kv is None:
            return None
        return kv.k, kv.v, kv.pos, kv.valid

    def append(self, layer: int, k: Tensor, v: Tensor, positions: Tensor) -> None:
        """Store the keys/values ``[b*s, g, t, e]`` of ``t`` new frames at ``positions [b, t]``.

        Each new frame fills a free slot, else overwrites the stream's oldest entry; with ``t`` larger
        than the capacity only the newest ``capacity`` frames are kept.
        """
        b, s, m = self.n_streams, self.tokens_per_frame, self.capacity
        if m == 0:
            return
        if k.shape[0] != b * s:
            raise ValueError(
                f"cache holds {b} streams x {s} tokens, got keys for {k.shape[0]} rows"
            )
        t = k.shape[2]
        if t > m:
            k, v, positions = k[:, :, -m:], v[:, :, -m:], positions[:, -m:]
            t = m
        kv = self.layers.get(layer)
        if kv is None:
            g, e = k.shape[1], k.shape[3]
            kv = _LayerKV(
                k=k.new_zeros(b * s, g, m, e),
                v=v.new_zeros(b * s, g, m, e),
                pos=torch.zeros(b, m, dtype=torch.long, device=k.device),
                valid=torch.zeros(b, m, dtype=torch.bool, device=k.device),
            )
            self.layers[layer] = kv
        k5 = kv.k.view(b, s, *kv.k.shape[1:])  # b s g m e
        v5 = kv.v.view(b, s, *kv.v.shape[1:])
        new_k = k.view(b, s, *k.shape[1:])  # b s g t e
        new_v = v.view(b, s, *v.shape[1:])
        rows = torch.arange(b, device=k.device)
        lowest = torch.iinfo(torch.long).min
        for j in range(t):
            slot = torch.where(kv.valid, kv.pos, lowest).argmin(dim=1)  # b: free slot, else oldest
            k5[rows, :, :, slot] = new_k[:, :, :, j].to(k5.dtype)
            v5[rows, :, :, slot] = new_v[:, :, :, j].to(v5.dtype)
            kv.pos[rows, slot] = positions[:, j]
            kv.valid[rows, slot] = True

    def entries(self) -> Tensor:
        """Cached frames per stream, ``[b]`` long (the same for every time layer)."""
        if not self.layers:
            return torch.zeros(self.n_streams, dtype=torch.long)
        return next(iter(self.layers.values())).valid.sum(1)

    def replace_streams(self, idx: Tensor, other: KVCache) -> None:
        """Overwrite streams ``idx`` (``[k]`` long) with the ``k`` streams of ``other``."""
        if other.n_streams != len(idx) or other.capacity != self.capacity:
            raise ValueError("replacement cache must hold len(idx) streams with the same capacity")
        s = self.tokens_per_frame
        for layer, src in other.layers.items():
            dst = self.layers.get(layer)
            if dst is None:
                b = self.n_streams
                dst = _LayerKV(
                    k=src.k.new_zeros(b * s, *src.k.shape[1:]),
                    v=src.v.new_zeros(b * s, *src.v.shape[1:]),
                    pos=torch.zeros(b, self.capacity, dtype=torch.long, device=src.pos.device),
                    valid=torch.zeros(b, self.capacity, dtype=torch.bool, device=src.pos.device),
                )
                self.layers[layer] = dst
            rows = (idx[:, None] * s + torch.arange(s, device=idx.device)).reshape(-1)
            dst.k[rows] = src.k.to(dst.k.dtype)
            dst.v[rows] = src.v.to(dst.v.dtype)
            dst.pos[idx] = src.pos
            dst.valid[idx] = src.valid
        for layer, dst in self.layers.items():
            if layer not in other.layers:
                dst.valid[idx] = False

    def read_only(self) -> ReadOnlyCache:
        """A view that reads this cache and ignores appends (for passes that must not be cached)."""
        return ReadOnlyCache(self)


class ReadOnlyCache:
    """Reads a :class:`KVCache`; ``append`` deliberately stores nothing (denoising passes)."""

    def __init__(self, cache: KVCache) -> None:
        self.cache = cache

    def get(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        return self.cache.get(layer)

    def append(self, layer: int, k: Tensor, v: Tensor, positions: Tensor) -> None:
        return None
