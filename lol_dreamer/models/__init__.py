"""Networks: tokenizers, the dynamics transformer and the agent heads.

``build_tokenizer(config)`` rebuilds a tokenizer from its saved config dict alone.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["build_tokenizer"]


def build_tokenizer(config: dict[str, Any]) -> nn.Module:
    """Build a tokenizer (transformer or CNN, by ``config["arch"]``) from ``TokenizerConfig.to_dict()``.

    Args:
        config: a tokenizer config dict (as saved in a run folder's ``config.json`` under ``"model"``).
    Returns:
        ``TransformerTokenizer`` or ``CNNTokenizer`` (untrained; load weights separately).
    """
    from lol_dreamer.models.tokenizer_config import TokenizerConfig

    cfg = TokenizerConfig.from_dict(dict(config))
    if cfg.arch == "cnn":
        from lol_dreamer.models.cnn_tokenizer import CNNTokenizer

        return CNNTokenizer(cfg)
    from lol_dreamer.models.tokenizer import TransformerTokenizer

    return TransformerTokenizer(cfg)
