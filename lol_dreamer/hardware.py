"""Where a run trains: platform, CPUs, torch version and threads, accelerator (recorded in run folders)."""

from __future__ import annotations

import os
import platform
from typing import Any


def hardware() -> dict[str, Any]:
    """Platform, Python, CPU count, torch version and threads, and the CUDA device's name (or None).

    Example:
        >>> sorted(hardware())
        ['cpu_count', 'cuda', 'platform', 'python', 'torch', 'torch_threads']
    """
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def describe(hw: dict[str, Any]) -> str:
    """One phrase for a model card: ``"NVIDIA H200 (torch 2.11.0)"`` or ``"2 CPUs (torch 2.14.1)"``."""
    where = hw.get("cuda") or f"{hw.get('cpu_count', '?')} CPUs"
    return f"{where} (torch {hw.get('torch', '?')})"
