"""Data-parallel helpers for runs launched with ``torchrun`` (gloo on CPU, NCCL on GPU).

A plain ``python`` launch is a world of one: every helper here then does nothing, so the training
loop is written once. Only rank 0 writes files; gradients are averaged across ranks after each
backward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 … world_size − 1).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT`` through
    ``env://``). Uses NCCL when the job trains on CUDA and gloo otherwise. Calling it again, or
    without torchrun, is harmless.

    Args:
        device: the training device setting (``"auto"``, ``"cpu"``, ``"cuda"``…), used to pick the backend.

    Returns:
        This process's :class:`DistInfo`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def get_info() -> DistInfo:
    """The current :class:`DistInfo` (a world of one when no process group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main() -> bool:
    """True on rank 0 (and in single-process runs): the one process that writes files."""
    return get_info().is_main


def barrier() -> None:
    """Wait for every rank (no-op in a world of one)."""
    if get_info().enabled:
        dist.barrier()


def cleanup(sync: bool = True) -> None:
    """Leave the process group, if one was joined.

    With ``sync`` (a normal finish) the ranks first meet at a barrier: destroying the group while a
    peer still has a collective in flight can abort that peer's gloo threads ("terminate called
    without an active exception"). After an error pass ``sync=False``, so the failing rank leaves
    at once and its peers' pending collectives fail fast instead of waiting at the barrier.
    """
    if dist.is_available() and dist.is_initialized():
        if sync and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank so all start identical."""
    if not get_info().enabled:
        return
    for t in module.state_dict().values():
        dist.broadcast(t, src=src)


@torch.no_grad()
def all_reduce_gradients(params: list[nn.Parameter]) -> None:
    """Average ``.grad`` over ranks in one flat buffer (a missing grad counts as zeros).

    Explicit averaging (instead of hooking ``forward``) keeps data parallelism correct whichever
    model methods an objective calls (``encode``, ``decode``, heads…), and for frozen subsets.
    """
    info = get_info()
    if not info.enabled or not params:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def all_reduce_mean(value: float, device: torch.device | str = "cpu") -> float:
    """Mean of a scalar over ranks (the value itself in a world of one)."""
    info = get_info()
    if not info.enabled:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather one small JSON-like object from every rank (``[obj]`` in a world of one)."""
    info = get_info()
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when running data-parallel (else return it).

    For code whose loss goes through ``model(...)``; :func:`all_reduce_gradients` is the
    alternative the shared trainer uses.
    """
    if not get_info().enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
