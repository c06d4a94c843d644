"""One rule for rebuilding a config dataclass from its saved JSON dict."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")


def strict_from_dict(cls: type[C], d: dict[str, Any]) -> C:
    """Build the dataclass ``cls`` from ``d``; unknown keys are a ValueError naming them.

    A key this version does not know usually means the config was saved by a newer version, so
    ignoring it would silently rebuild a different model.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)} "
            "(was this saved by a newer version?)"
        )
    return cls(**d)
