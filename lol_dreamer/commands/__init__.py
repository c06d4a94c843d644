"""Light argument definitions for each ``lol-dreamer`` subcommand.

Each module here defines ``register(subparsers)`` and must not import torch-heavy code, ``envs`` or
``agents`` at module level: the work is done by a function imported inside the command
(see :func:`lazy`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy(target: str) -> Callable[[Any], Any]:
    """``"pkg.module:function"`` → a callable that imports the module only when called."""
    module, _, func = target.partition(":")

    def run(args: Any) -> Any:
        return getattr(importlib.import_module(module), func)(args)

    run.__name__ = func
    return run
