"""N dreams split into shards that step in parallel, one CPU core each.

On a CPU, a batch of N dreams stepped with several OpenMP threads scales poorly: every one of the
thousands of small ops per step forks and joins the thread team, so two threads on two cores gave
only 1.3–1.45× one thread at N = 64 (``benchmarks/RESULTS.md``). :class:`ShardedDreamBatch` instead
splits the N streams into ``S`` contiguous shards, each a :class:`DreamBatch` with its own sampler
state, generators and decoder, and steps the shards concurrently on ``S`` worker threads with one
intra-op thread each (torch releases the GIL inside its ops). It has the interface of
:class:`DreamBatch` that the envs use (``reset``, ``step``, ``seed``, ``latent``, ``agent_features``,
``tasks``, ``state``, ``sampler``, ``close``).

Results depend on the shard count (each shard draws its own noise), never on timing: the same seed
and the same ``S`` give the same dream.

Dimension letters as in :mod:`lol_dreamer.envs.dream_batch`.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from lol_dreamer.envs.dream_batch import DreamBatch, DreamStep, _usable_cores
from lol_dreamer.world_model import WorldModel

_GOLDEN = 0x9E37_79B9_7F4A_7C15  # spreads shard seeds apart


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` row ranges of ``shards`` near-equal shards of ``n`` streams."""
    if not 1 <= shards <= n:
        raise ValueError(f"shards must be in 1..num_envs={n}, got {shards}")
    cuts = [round(i * n / shards) for i in range(shards + 1)]
    return list(itertools.pairwise(cuts))


class ShardedDreamBatch:
    """``N`` dreams as ``S`` :class:`DreamBatch` shards stepped in parallel.

    Args:
        wm: the world model (shared by the shards, read only).
        num_envs: ``N``.
        shards: ``S`` (1 ≤ S ≤ N).
        **kwargs: the other :class:`DreamBatch` arguments (``k``, ``context_length``, ``decode``,
            ``dtype``, ``decode_dtype``).
    """

    def __init__(self, wm: WorldModel, num_envs: int, shards: int, **kwargs: Any) -> None:
        self.wm = wm
        self.num_envs = num_envs
        self.bounds = shard_bounds(num_envs, shards)
        # Each shard decodes on its own worker thread already; no second decode thread per shard.
        kwargs["overlap_decode"] = False
        self.shards = [DreamBatch(wm, b - a, **kwargs) for a, b in self.bounds]
        first = self.shards[0]
        self.device, self.k, self.context_length = first.device, first.k, first.context_length
        self.decode, self.sampler = first.decode, first.sampler
        self._pool = ThreadPoolExecutor(
            len(self.shards), thread_name_prefix="dream-shard",
            initializer=torch.set_num_threads, initargs=(1,),
        )  # fmt: skip
        self.seed(0)

    # ------------------------------------------------------------------------------ the state

    @property
    def state(self) -> list | None:
        """None before the first reset (as :attr:`DreamBatch.state`), else the shards' states."""
        states = [s.state for s in self.shards]
        return None if any(st is None for st in states) else states

    @property
    def latent(self) -> Tensor | None:
        parts = [s.latent for s in self.shards]
        return None if any(p is None for p in parts) else torch.cat(parts)

    @property
    def agent_features(self) -> Tensor | None:
        parts = [s.agent_features for s in self.shards]
        return None if any(p is None for p in parts) else torch.cat(parts)

    @property
    def tasks(self) -> Tensor:
        return torch.cat([s.tasks for s in self.shards])

    def seed(self, seed: int) -> None:
        """Seed every shard's generators from ``seed`` (shard ``j`` gets its own stream)."""
        for j, shard in enumerate(self.shards):
            shard.seed((int(seed) + j * _GOLDEN) % (2**63))

    # ------------------------------------------------------------------------------ in parallel

    def _each(self, calls: list[tuple[DreamBatch, tuple]], method: str) -> list:
        """Run ``getattr(shard, method)(*args)`` for every ``(shard, args)`` on the worker threads."""
        futures = [self._pool.submit(_no_grad_call, getattr(s, method), args) for s, args in calls]
        return [f.result() for f in futures]

    def reset(
        self,
        rows: Tensor | None,
        latents: Tensor,
        actions: Tensor,
        tasks: Tensor,
        labeled: Tensor | None = None,
    ) -> Tensor | None:
        """As :meth:`DreamBatch.reset`: restart ``rows`` (``bool [N]``, None = all) from ``M`` clips."""
        n = self.num_envs
        rows = (
            torch.ones(n, dtype=torch.bool) if rows is None else rows.to("cpu", torch.bool)
        ).reshape(n)
        if int(rows.sum()) != latents.shape[0]:
            raise ValueError(
                f"{int(rows.sum())} streams to restart but {latents.shape[0]} start clips given"
            )
        calls, offset = [], 0
        for shard, (a, b) in zip(self.shards, self.bounds, strict=True):
            m = int(rows[a:b].sum())
            if m:
                sl = slice(offset, offset + m)
                lab = None if labeled is None else labeled[sl]
                sub = rows[a:b].to(shard.device)
                calls.append((shard, (sub, latents[sl], actions[sl], tasks[sl], lab)))
            offset += m
        frames = [f for f in self._each(calls, "reset") if f is not None]
        return torch.cat(frames) if frames else None

    def step(
        self, actions: Tensor, decode: bool | None = None, validate: bool | None = None
    ) -> DreamStep:
        """As :meth:`DreamBatch.step`, the shards in parallel."""
        if tuple(actions.shape[:1]) != (self.num_envs,):
            raise ValueError(
                f"actions must be int64 [{self.num_envs}, 9] = [movement, 8 keys], got "
                f"{tuple(actions.shape)}"
            )
        calls = [(s, (actions[a:b], decode, validate)) for s, (a, b) in zip(self.shards, self.bounds, strict=True)]  # fmt: skip
        outs: list[DreamStep] = self._each(calls, "step")

        def cat(name: str) -> Tensor | None:
            parts = [getattr(o, name) for o in outs]
            return None if parts[0] is None else torch.cat(parts)

        return DreamStep(
            latent=cat("latent"),
            agent_features=cat("agent_features"),
            reward=cat("reward"),
            continue_prob=cat("continue_prob"),
            frames=cat("frames"),
        )

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True)
        for s in self.shards:
            s.close()


def _no_grad_call(fn: Any, args: tuple) -> Any:
    with torch.no_grad():  # grad mode is per thread
        return fn(*args)


def make_dream_batch(
    wm: WorldModel, num_envs: int, shards: int | str | None = 1, **kwargs: Any
) -> DreamBatch | ShardedDreamBatch:
    """A :class:`DreamBatch`, or a :class:`ShardedDreamBatch` when ``shards`` resolves above 1.

    ``shards``: an int, or ``"auto"`` (see :func:`auto_shards`); None = 1.
    """
    s = auto_shards(wm.device, num_envs) if shards == "auto" else int(shards or 1)
    if s == 1:
        return DreamBatch(wm, num_envs, **kwargs)
    return ShardedDreamBatch(wm, num_envs, s, **kwargs)


def auto_shards(device: torch.device, num_envs: int, min_per_shard: int = 16) -> int:
    """One shard per usable CPU core, keeping at least ``min_per_shard`` streams per shard (below
    that the per-op overhead of a small batch outweighs the second core); 1 off the CPU."""
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(_usable_cores(), num_envs // min_per_shard))
