"""Convolutional tokenizer baseline with the transformer tokenizer's interface.

Each frame is encoded on its own (no temporal context): a residual conv encoder downsamples to an
``s × s`` grid of ``c`` channels with ``s² · c = n_z · d_z``, a 1×1 conv + tanh gives the latents,
and a mirrored decoder upsamples back. Latents have the same ``[b, t, n_z, d_z]`` layout as the
transformer tokenizer of the same preset, so the dynamics model does not care which one made them.
GroupNorm (not BatchNorm) keeps every frame independent of the rest of the batch, so streaming and
clip results agree.

Dimension letters: ``b`` batch, ``t`` frames, ``c`` channels, ``s`` latent grid side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from lol_dreamer.models.tokenizer import check_frames
from lol_dreamer.models.tokenizer_config import TokenizerConfig


def latent_grid(cfg: TokenizerConfig) -> tuple[int, int]:
    """The CNN's latent grid ``(side s, channels c)``: the largest ``s`` dividing ``res`` with
    ``s² ≤ n_latents`` and ``s² · c = n_z · d_z``."""
    total = cfg.n_z * cfg.d_z
    best = 1
    for s in range(1, math.isqrt(cfg.n_latents) + 1):
        if cfg.res % s == 0 and total % (s * s) == 0:
            best = s
    return best, total // (best * best)


def _groups(ch: int) -> int:
    return math.gcd(8, ch)


def _conv_layout(x: Tensor) -> Tensor:
    """On CPU, ``x [N, C, H, W]`` in channels-last memory order (same values): oneDNN's
    convolutions run faster on it at the small channel counts used here (≈ 29 vs 36 ms per 128 px
    ``nano`` decode on one Zen 4 core; a training step costs the same). Every call takes the same
    path, so results never depend on the autograd mode."""
    if x.device.type != "cpu":
        return x
    return x.contiguous(memory_format=torch.channels_last)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # device types without autocast (e.g. meta)
        return False


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.GroupNorm(_groups(ch), ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(_groups(ch), ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class CNNTokenizer(nn.Module):
    """Per-frame conv encoder → tanh latents → conv decoder.

    Example:
        >>> tok = CNNTokenizer(TokenizerConfig.preset("test", res=32, arch="cnn"))
        >>> tok.decode(tok.encode(torch.rand(1, 2, 3, 32, 32))).shape
        torch.Size([1, 2, 3, 32, 32])
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        if cfg.arch != "cnn":
            raise ValueError(f"CNNTokenizer got arch={cfg.arch!r}; use build_tokenizer()")
        self.cfg = cfg
        self.side, self.lat_ch = latent_grid(cfg)
        factor = cfg.res // self.side
        n_down = 0
        while factor % 2 == 0:
            factor //= 2
            n_down += 1
        self.rest = factor  # leftover odd down-sampling factor, done by one strided conv
        cap = cfg.cnn_width * 4
        chans = [min(cfg.cnn_width * 2**i, cap) for i in range(n_down + 1)]
        blocks = cfg.cnn_blocks

        enc: list[nn.Module] = [nn.Conv2d(cfg.channels, chans[0], 3, padding=1)]
        for i in range(n_down):
            enc += [ResBlock(chans[i]) for _ in range(blocks)]
            enc.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1))
        if self.rest > 1:
            enc.append(nn.Conv2d(chans[-1], chans[-1], self.rest, stride=self.rest))
        enc += [ResBlock(chans[-1]) for _ in range(blocks)]
        enc += [
            nn.GroupNorm(_groups(chans[-1]), chans[-1]),
            nn.SiLU(),
            nn.Conv2d(chans[-1], self.lat_ch, 1),
        ]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(self.lat_ch, chans[-1], 3, padding=1)]
        dec += [ResBlock(chans[-1]) for _ in range(blocks)]
        if self.rest > 1:
            dec.append(nn.ConvTranspose2d(chans[-1], chans[-1], self.rest, stride=self.rest))
        for i in reversed(range(n_down)):
            dec += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(chans[i + 1], chans[i], 3, padding=1),
            ]
            dec += [ResBlock(chans[i]) for _ in range(blocks)]
        head = nn.Conv2d(chans[0], cfg.channels, 3, padding=1)
        nn.init.zeros_(head.weight)  # start from mid-grey
        nn.init.zeros_(head.bias)
        dec += [nn.GroupNorm(_groups(chans[0]), chans[0]), nn.SiLU(), head]
        self.decoder = nn.Sequential(*dec)

    def encode(self, frames: Tensor, mask_ratio: float | None = 0.0) -> Tensor:
        """Args: frames ``[b, t, c, H, W]`` in [0, 1]; ``mask_ratio`` is accepted for interface
        compatibility and ignored (the CNN has no MAE). Returns: ``z [b, t, n_z, d_z]`` in (-1, 1)."""
        check_frames(frames, self.cfg)
        b, t = frames.shape[:2]
        x = _conv_layout(rearrange(frames * 2.0 - 1.0, "b t c h w -> (b t) c h w"))
        z = torch.tanh(self.encoder(x))  # (b t) c s s
        z = rearrange(z, "(b t) c h w -> b t (h w c)", b=b, t=t)
        return z.reshape(b, t, self.cfg.n_z, self.cfg.d_z)

    def decode(self, z: Tensor, clamp: bool = True) -> Tensor:
        """Args: z ``[b, t, n_z, d_z]``; ``clamp`` to [0, 1]. Returns: frames ``[b, t, c, H, W]``."""
        c = self.cfg
        if z.dim() != 4 or tuple(z.shape[-2:]) != (c.n_z, c.d_z):
            raise ValueError(f"expected z [b, t, {c.n_z}, {c.d_z}], got {tuple(z.shape)}")
        b, t = z.shape[:2]
        x = rearrange(z.reshape(b, t, -1), "b t (h w c) -> (b t) c h w", h=self.side, w=self.side)
        h = self.decoder[:-1](_conv_layout(x))
        # The 3-channel output conv (≈ 1 % of the decoder's FLOPs) always runs in fp32: under a
        # bf16 autocast the frame would otherwise be quantised to bf16 (≈ 1/256 near white).
        if _autocast_on(h.device.type):
            with torch.autocast(device_type=h.device.type, enabled=False):
                y = self.decoder[-1](h.float())
        else:
            y = self.decoder[-1](h)
        y = y.contiguous() * 0.5 + 0.5
        if y.shape[-1] != c.res:  # only when res is not a multiple of the grid's strides
            y = F.interpolate(y, size=(c.res, c.res), mode="bilinear", align_corners=False)
        y = rearrange(y, "(b t) c h w -> b t c h w", b=b, t=t)
        return y.clamp(0.0, 1.0) if clamp else y

    def forward(self, frames: Tensor, mask_ratio: float | None = None) -> tuple[Tensor, Tensor]:
        """Returns ``(recon [b, t, c, H, W] unclamped, z [b, t, n_z, d_z])``."""
        z = self.encode(frames, mask_ratio)
        return self.decode(z, clamp=False), z

    def encoder_stream(self, batch: int) -> _FrameStream:
        return _FrameStream(self, batch, encode=True)

    def decoder_stream(self, batch: int) -> _FrameStream:
        return _FrameStream(self, batch, encode=False)


class _FrameStream:
    """Streams for a per-frame model: nothing to cache, ``step`` is the clip call on one frame."""

    stateless = True  # callers may skip steps whose output they do not need

    def __init__(self, tok: CNNTokenizer, batch: int, encode: bool) -> None:
        self.tok, self.batch, self.encode, self.t = tok, batch, encode, 0

    def reset(self, rows: Tensor | None = None) -> None:
        """Nothing is cached; kept for interface parity with the transformer streams."""

    @torch.no_grad()
    def step(self, x: Tensor, clamp: bool = True) -> Tensor:
        """Encoder: frame ``[b, c, H, W]`` → ``z [b, n_z, d_z]``; decoder: z → frame."""
        if x.shape[0] != self.batch:
            raise ValueError(
                f"this stream was opened for batch {self.batch}, got a batch of {x.shape[0]}"
            )
        self.t += 1
        if self.encode:
            return self.tok.encode(x[:, None])[:, 0]
        return self.tok.decode(x[:, None], clamp=clamp)[:, 0]
