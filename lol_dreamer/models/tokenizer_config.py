"""Configuration and size presets of the video tokenizers (transformer and CNN baseline).

One :class:`TokenizerConfig` describes either architecture (``arch``); a checkpoint stores
``config.to_dict()`` and rebuilds its model from it alone (``build_tokenizer``).

Latent shapes: the bottleneck emits ``n_latents × bottleneck`` values per frame (N_b × D_b), which are
reshaped to ``n_z × d_z`` for the dynamics model (DreamerV4 §3.1, arXiv 2509.24527: 512×16 → 256×32).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lol_dreamer.config_utils import strict_from_dict

ARCHS = ("transformer", "cnn")
PRESETS = ("test", "nano", "tiny", "small", "medium", "large")


@dataclass
class TokenizerConfig:
    """Hyper-parameters of a video tokenizer.

    Attributes:
        arch: ``"transformer"`` (block-causal, DreamerV4) or ``"cnn"`` (baseline).
        res: square frame side in pixels.
        patch: patch side in pixels (transformer); must divide ``res``.
        channels: image channels.
        dim: transformer width.
        enc_depth: encoder blocks.
        dec_depth: decoder blocks.
        heads: attention heads.
        kv_heads: key/value heads (GQA when smaller than ``heads``).
        n_latents: learned latent tokens per frame, N_b.
        bottleneck: bottleneck width per latent token, D_b (tanh-squashed).
        z_tokens: tokens per frame handed to the dynamics model, n_z; ``d_z`` follows from
            ``n_latents * bottleneck == n_z * d_z``.
        window: past frames each frame may attend to (0 = every frame on its own).
        mlp_mult: SwiGLU hidden width / ``dim``.
        softcap: attention-logit soft cap.
        mae_max_ratio: MAE patch-drop probability is drawn from U(0, mae_max_ratio) per image.
        rope_base: RoPE frequency base.
        spatial_bias: add a learnable per-head spatial attention bias ``-a_h · d²`` (``d``: distance
            between the tokens' grid positions, in patches), initialised from local to nearly
            global, so latents start out reading their own region and patch queries their nearby
            latents. Without it the attention starts near-uniform and the latents collapse to a
            frame-independent code (training stalls at the mean frame). Configs saved before this
            field existed rebuild with it off.
        cnn_width: CNN baseline: channels of the first stage (doubles per stage up to ``dim``);
            the CNN uses ``n_z * d_z`` (not N_b, D_b) and picks its own latent grid.
        cnn_blocks: CNN baseline: residual blocks per stage.
    """

    arch: str = "transformer"
    res: int = 128
    patch: int = 8
    channels: int = 3
    dim: int = 128
    enc_depth: int = 3
    dec_depth: int = 3
    heads: int = 4
    kv_heads: int = 4
    n_latents: int = 64
    bottleneck: int = 16
    z_tokens: int = 32
    window: int = 3
    mlp_mult: float = 8 / 3
    softcap: float = 50.0
    mae_max_ratio: float = 0.9
    rope_base: float = 10000.0
    spatial_bias: bool = True
    cnn_width: int = 32
    cnn_blocks: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown tokenizer arch {self.arch!r}; choose one of {ARCHS}")
        if self.res % self.patch:
            raise ValueError(
                f"patch={self.patch} must divide res={self.res}; pick another patch size"
            )
        if (self.n_latents * self.bottleneck) % self.z_tokens:
            raise ValueError(
                f"n_latents*bottleneck = {self.n_latents * self.bottleneck} must divide by "
                f"z_tokens={self.z_tokens} so latents reshape to (n_z, d_z)"
            )
        if self.dim % self.heads or self.heads % self.kv_heads:
            raise ValueError(
                f"dim={self.dim}, heads={self.heads}, kv_heads={self.kv_heads} do not divide"
            )
        if not 0.0 <= self.mae_max_ratio < 1.0:
            raise ValueError(f"mae_max_ratio must be in [0, 1), got {self.mae_max_ratio}")
        if self.window < 0:
            raise ValueError(f"window must be >= 0, got {self.window}")

    @property
    def n_z(self) -> int:
        """Latent tokens per frame seen by the dynamics model."""
        return self.z_tokens

    @property
    def d_z(self) -> int:
        """Width of each latent token seen by the dynamics model."""
        return self.n_latents * self.bottleneck // self.z_tokens

    @property
    def n_patches(self) -> int:
        return (self.res // self.patch) ** 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error naming them.

        A config without ``spatial_bias`` predates it and rebuilds with it off (same weights).
        """
        return strict_from_dict(cls, {"spatial_bias": False, **d})

    @classmethod
    def preset(cls, name: str, res: int = 128, arch: str = "transformer") -> TokenizerConfig:
        """A named size preset.

        ``test`` is tiny (CI); ``nano`` trains on two CPU cores at 128 px; ``tiny`` … ``large`` land
        near 7 M / 53 M / 115 M / 307 M parameters (transformer at 352 px).

        Args:
            name: one of ``PRESETS``.
            res: frame side in pixels.
            arch: ``"transformer"`` or ``"cnn"``.
        Returns:
            The config.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown tokenizer preset {name!r}; choose one of {PRESETS}")
        # 8-px patches up to 128 px: a patch token of width 128–256 can render any 8×8×3 patch
        # (small sprites stay crisp), which 16-px patches cannot. nano keeps a 1-frame window:
        # latents still see further back through depth, and the encoder costs ~40% less.
        target = 8 if res <= 128 else 16
        # the largest patch side up to the target that divides res (res=100 → 5)
        patch = max(p for p in range(1, target + 1) if res % p == 0)
        table: dict[str, dict[str, Any]] = {
            "test": dict(dim=32, enc_depth=1, dec_depth=1, heads=2, kv_heads=1, n_latents=16,
                         bottleneck=4, z_tokens=8, window=2, cnn_width=8, cnn_blocks=1),
            "nano": dict(dim=128, enc_depth=3, dec_depth=3, heads=4, kv_heads=4, n_latents=64,
                         bottleneck=16, z_tokens=32, window=1, cnn_width=24, cnn_blocks=1),
            "tiny": dict(dim=256, enc_depth=4, dec_depth=4, heads=4, kv_heads=4, n_latents=128,
                         bottleneck=16, z_tokens=64, window=3, cnn_width=32, cnn_blocks=2),
            "small": dict(dim=512, enc_depth=8, dec_depth=8, heads=8, kv_heads=8, n_latents=256,
                          bottleneck=16, z_tokens=128, window=4, cnn_width=64, cnn_blocks=2),
            "medium": dict(dim=768, enc_depth=8, dec_depth=8, heads=12, kv_heads=12, n_latents=512,
                           bottleneck=16, z_tokens=256, window=4, cnn_width=96, cnn_blocks=2),
            "large": dict(dim=1024, enc_depth=12, dec_depth=12, heads=16, kv_heads=16, n_latents=512,
                          bottleneck=16, z_tokens=256, window=4, cnn_width=128, cnn_blocks=3),
        }  # fmt: skip
        kw = table[name]
        return cls(arch=arch, res=res, patch=patch, **kw)
