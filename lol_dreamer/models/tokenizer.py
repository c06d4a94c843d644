"""Block-causal transformer video tokenizer (DreamerV4 §3.1, arXiv 2509.24527).

Per frame the encoder sees ``P`` patch tokens and ``N_b`` learned latent tokens. Patches attend to the
patches of their own frame; latents attend to everything in their frame and in the ``window`` frames
before it. The latents leave through a linear → tanh bottleneck (N_b × D_b, reshaped to n_z × d_z).
The decoder turns each frame's latents back into tokens, adds fresh learned patch queries, lets the
queries attend to their frame's queries and to the latents of their frame and the ``window`` frames
before it, and lets latents attend only to latents (same window). Both halves are causal in time, so a
frame can be encoded or decoded as soon as it arrives: :meth:`TransformerTokenizer.encoder_stream` and
:meth:`TransformerTokenizer.decoder_stream` do so with a cache bounded by ``window`` frames and give
the same numbers as the clip path.

Positions: axial RoPE over (time, row, column). A head's rotation pairs are split between the three
axes (time gets the remainder); patch tokens sit at their patch's grid cell and latent tokens are
spread evenly over the same grid. Time is the absolute frame index; only differences matter, and
angles are reduced mod 2π in float64, so a stream of any length matches the clip result.

RoPE alone gives no locality at initialisation (queries and keys are unrelated projections), so every
latent would start out reading a near-uniform average of its frame and every patch query a
near-uniform average of the latents; training then stalls at the dataset's mean frame. With
``spatial_bias`` (default) each head adds a learned ``-a_h · |pos_k - pos_q - Δ_h|²`` to its logits,
the offsets ``Δ_h`` tiling one latent cell, so at init a latent's heads pass on its cell's patches
side by side and a patch query reads its own latents (see :meth:`TransformerTokenizer._locality_init`).
The bias depends on grid positions only, never on time, so the masks and streaming are unchanged.

MAE (training): each image draws a drop probability ``p ~ U(0, mae_max_ratio)`` and replaces each
patch, with probability ``p``, by a learned mask embedding.

Dimension letters: ``b`` batch, ``t`` frames, ``s`` tokens per frame, ``P`` patches per frame,
``N`` latent tokens per frame (N_b), ``D`` bottleneck width (D_b), ``d`` model width.
"""

from __future__ import annotations

import math
from collections import deque

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from lol_dreamer.models.layers import Block, RMSNorm, axial_rope_angles
from lol_dreamer.models.tokenizer_config import TokenizerConfig

__all__ = ["TokenizerConfig", "TransformerTokenizer", "check_frames", "mask_rule"]


def check_frames(frames: Tensor, cfg: TokenizerConfig, ndim: int = 5) -> None:
    """Raise a ValueError naming the expected layout when ``frames`` does not fit ``cfg``."""
    want = (cfg.channels, cfg.res, cfg.res)
    if frames.dim() != ndim or tuple(frames.shape[-3:]) != want:
        lead = "[b, t, " if ndim == 5 else "[b, "
        raise ValueError(
            f"expected frames {lead}{cfg.channels}, {cfg.res}, {cfg.res}] float in [0, 1], got "
            f"{tuple(frames.shape)}; convert uint8 [.., H, W, 3] with x.permute(..., 3, 1, 2) / 255"
        )


def mask_rule(kind: str, q_latent: Tensor, k_latent: Tensor, dt: Tensor, window: int) -> Tensor:
    """Who may attend to whom in the tokenizer (True = may attend).

    Args:
        kind: ``"enc"`` or ``"dec"``.
        q_latent: ``[n]`` bool, query is a latent token.
        k_latent: ``[m]`` bool, key is a latent token.
        dt: ``[n, m]`` (or broadcastable) query frame index minus key frame index.
        window: past frames visible.
    Returns:
        ``[n, m]`` bool.
    """
    ql, kl = q_latent[:, None], k_latent[None, :]
    same = dt == 0
    recent = (dt >= 0) & (dt <= window)
    if kind == "enc":  # latents read everything recent; patches read their own frame's patches
        return (ql & recent) | (~ql & ~kl & same)
    # decoder: patch queries read own-frame queries and recent latents; latents read recent latents
    return (~ql & ((~kl & same) | (kl & recent))) | (ql & kl & recent)


class TransformerTokenizer(nn.Module):
    """Block-causal transformer tokenizer with a tanh bottleneck and MAE patch dropout.

    Example:
        >>> tok = TransformerTokenizer(TokenizerConfig.preset("test", res=32))
        >>> z = tok.encode(torch.rand(2, 3, 3, 32, 32))  # [2, 3, n_z, d_z]
        >>> frames = tok.decode(z)  # [2, 3, 3, 32, 32]
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        if cfg.arch != "transformer":
            raise ValueError(f"TransformerTokenizer got arch={cfg.arch!r}; use build_tokenizer()")
        self.cfg = cfg
        d, P, N = cfg.dim, cfg.n_patches, cfg.n_latents
        pdim = cfg.patch * cfg.patch * cfg.channels
        self.patch_embed = nn.Linear(pdim, d)
        self.mask_embed = nn.Parameter(torch.randn(d) * 0.02)
        self.enc_latents = nn.Parameter(torch.randn(N, d) * 0.02)
        self.enc_blocks = nn.ModuleList(self._block() for _ in range(cfg.enc_depth))
        self.enc_norm = RMSNorm(d)
        self.to_bottleneck = nn.Linear(d, cfg.bottleneck)
        self.from_bottleneck = nn.Linear(cfg.bottleneck, d)
        self.dec_latents = nn.Parameter(torch.randn(N, d) * 0.02)
        self.patch_queries = nn.Parameter(torch.randn(P, d) * 0.02)
        self.dec_blocks = nn.ModuleList(self._block() for _ in range(cfg.dec_depth))
        self.dec_norm = RMSNorm(d)
        self.to_pixels = nn.Linear(d, pdim)
        nn.init.zeros_(self.to_pixels.weight)  # start from mid-grey
        nn.init.zeros_(self.to_pixels.bias)
        # Per-frame token order: encoder [patches, latents]; decoder [latents, patch queries].
        # Token kinds and positions are plain tensors, not buffers, so a model built on the meta
        # device and materialised later (``to_empty`` + ``load_state_dict``) keeps them right.
        is_lat = torch.arange(P + N, device="cpu") >= P
        self._is_latent = {"enc": is_lat, "dec": is_lat.flip(0)}
        patches, latents = self._patch_grid(), self._latent_grid()
        self._positions = {
            "enc": torch.cat((patches, latents)),
            "dec": torch.cat((latents, patches)),
        }
        if cfg.spatial_bias:  # per block and head: log a_h and the offset Δ_h of -a_h·|Δpos - Δ_h|²
            log_a, offsets = self._locality_init()
            self.enc_locality = nn.Parameter(log_a.repeat(cfg.enc_depth, 1))  # enc_depth heads
            self.dec_locality = nn.Parameter(log_a.repeat(cfg.dec_depth, 1))  # dec_depth heads
            self.enc_offsets = nn.Parameter(
                offsets.repeat(cfg.enc_depth, 1, 1)
            )  # enc_depth heads 2
            self.dec_offsets = nn.Parameter(
                offsets.repeat(cfg.dec_depth, 1, 1)
            )  # dec_depth heads 2
        # key position minus query position, in patches, between one frame's tokens: s s 2
        self._disp = {k: v[None, :] - v[:, None] for k, v in self._positions.items()}
        self.dense_attention = False  # True: reference dense masked attention in clip mode (tests)
        half = cfg.dim // cfg.heads // 2
        self.rope_sections = (half - 2 * (half // 3), half // 3, half // 3)

    def _block(self) -> Block:
        c = self.cfg
        return Block(c.dim, c.heads, c.kv_heads, c.mlp_mult, qk_norm=True, softcap=c.softcap)

    def _patch_grid(self) -> Tensor:
        g = self.cfg.res // self.cfg.patch
        ar = torch.arange(g, device="cpu")
        rows, cols = torch.meshgrid(ar, ar, indexing="ij")
        return torch.stack((rows.flatten(), cols.flatten()), -1).float()  # P 2

    def _latent_grid(self) -> Tensor:
        """Spread the N latents evenly over the patch grid (row-major, cell centres)."""
        g, n = self.cfg.res // self.cfg.patch, self.cfg.n_latents
        side = int(n**0.5)
        while n % side:
            side -= 1
        rows, cols = side, n // side
        i = torch.arange(n, device="cpu")
        r = (i // cols + 0.5) * g / rows - 0.5
        c = (i % cols + 0.5) * g / cols - 0.5
        return torch.stack((r, c), -1).float()  # N 2

    def _latent_spacing(self) -> float:
        """Distance between neighbouring latents on the patch grid, in patches."""
        g, n = self.cfg.res // self.cfg.patch, self.cfg.n_latents
        side = int(n**0.5)
        while n % side:
            side -= 1
        return g / max(side, n // side)

    def _locality_init(self) -> tuple[Tensor, Tensor]:
        """Initial spatial bias ``-a_h · |Δpos - Δ_h|²`` of every head.

        The heads' offsets ``Δ_h`` tile one latent cell on a ``k × k`` grid (``k = ⌈√heads⌉``), each
        head with a Gaussian reach of half the grid step: at init head ``h`` of a latent reads the
        patches at offset ``Δ_h``, so the heads together pass its cell's patches on side by side
        (a multi-head attention layer can express a convolution this way: Cordonnier et al. 2020,
        arXiv 1911.03584), and a patch query reads its own and neighbouring latents likewise.
        Both ``a_h`` and ``Δ_h`` are learned.

        Returns:
            ``(log_a [heads], offsets [heads, 2])``.
        """
        h = self.cfg.heads
        k = math.ceil(math.sqrt(h))
        step = self._latent_spacing() / k
        i = torch.arange(h, device="cpu")
        grid = torch.stack((i // k, i % k), -1).float()
        offsets = (grid + 0.5 - k / 2) * step
        sigma = 0.5 * step
        log_a = torch.full((h,), math.log(1.0 / (2.0 * sigma**2)))
        return log_a, offsets

    # ----------------------------------------------------------------------------------- helpers
    def _locality(self, kind: str, layer: int, like: Tensor) -> Tensor | None:
        """Spatial attention bias of block ``layer`` between one frame's tokens:
        ``-a_h · |pos_k - pos_q - Δ_h|²`` as ``[heads, s, s]`` (None when ``spatial_bias`` is off)."""
        if not self.cfg.spatial_bias:
            return None
        if kind == "enc":
            log_a, off = self.enc_locality[layer], self.enc_offsets[layer]
        else:
            log_a, off = self.dec_locality[layer], self.dec_offsets[layer]
        disp = self._disp[kind].to(device=like.device, dtype=torch.float32)  # s s 2
        d2 = (disp[None] - off.float()[:, None, None]).pow(2).sum(-1)  # heads s s
        return -log_a.float().exp()[:, None, None] * d2

    def _rope(self, kind: str, times: Tensor) -> tuple[Tensor, Tensor]:
        """Axial RoPE angles of the ``kind`` token layout at frame indices ``times [t]`` → each
        ``[t*s, e/2]``."""
        device = times.device
        # Angles are formed in float64; devices without it (MPS) compute them on the CPU.
        calc = torch.device("cpu") if device.type == "mps" else device
        spatial = self._positions[kind].to(calc)
        t, s = times.shape[0], spatial.shape[0]
        pos = torch.cat(
            (
                times.to(calc).double()[:, None, None].expand(t, s, 1),
                spatial.double()[None].expand(t, s, 2),
            ),
            -1,
        )
        head = self.cfg.dim // self.cfg.heads
        cos, sin = axial_rope_angles(
            pos.reshape(t * s, 3), head, self.rope_sections, self.cfg.rope_base
        )
        return cos.to(device), sin.to(device)

    def _clip_mask(self, kind: str, t: int, device: torch.device) -> Tensor:
        is_lat = self._is_latent[kind].to(device)
        s = is_lat.shape[0]
        frame = torch.arange(t, device=device).repeat_interleave(s)
        lat = is_lat.repeat(t)
        return mask_rule(kind, lat, lat, frame[:, None] - frame[None, :], self.cfg.window)

    def _run_clip(
        self, x: Tensor, blocks: nn.ModuleList, rope: tuple[Tensor, Tensor], kind: str
    ) -> Tensor:
        """Run a clip's tokens ``x [b, t, s, d]`` through ``blocks`` under the ``kind`` mask."""
        if self.dense_attention:  # reference path: one dense masked attention over all t*s tokens
            t, s = x.shape[1:3]
            mask = self._clip_mask(kind, t, x.device)
            x = rearrange(x, "b t s d -> b (t s) d")
            for i, blk in enumerate(blocks):
                bias = self._locality(kind, i, x)
                bias = None if bias is None else bias.repeat(1, t, t)  # h (t s) (t s)
                q, k, v = blk.attn.project(blk.norm1(x), rope=rope)
                a = attend_biased(q, k, v, mask, blk.attn.softcap, bias)
                x = x + blk.attn.out(rearrange(a, "b h n e -> b n (h e)"))
                x = x + blk.mlp(blk.norm2(x))
            return rearrange(x, "b (t s) d -> b t s d", s=s)
        for i, blk in enumerate(blocks):
            a, _ = self._attention(blk, blk.norm1(x), rope, kind, layer=i)
            x = x + a
            x = x + blk.mlp(blk.norm2(x))
        return x

    def _attention(
        self,
        blk: Block,
        h: Tensor,
        rope: tuple[Tensor, Tensor],
        kind: str,
        past: tuple[Tensor, Tensor, Tensor] | None = None,
        layer: int = 0,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The block's attention over ``h [b, t, s, d]``, computing only the allowed query/key pairs.

        Same result as a dense attention masked by :func:`mask_rule`, at a fraction of the cost:
        patch queries only meet keys of their own frame, and windowed keys are gathered per frame.

        Args:
            past: for one new frame (``t == 1``): cached ``(k, v [b, g, M, e], ok [b, M] bool)`` of
                the previous frames' readable tokens (oldest first); None: the window is in ``h``.
            layer: index of ``blk`` in its stack (selects its spatial-bias strengths).
        Returns:
            ``(out [b, t, s, d], (k, v))`` with the readable tokens' keys/values ``[b, g, t, m, e]``
            (all tokens for the encoder, latents for the decoder) for a cache.
        """
        attn, c = blk.attn, self.cfg
        b, t, s, d = h.shape
        P, N, W = c.n_patches, c.n_latents, c.window
        e, g = attn.head_dim, attn.n_kv_heads
        q, k, v = attn.project(h.reshape(b, t * s, d), rope=rope)
        q = q.view(b, attn.n_heads, t, s, e)
        k, v = k.view(b, g, t, s, e), v.view(b, g, t, s, e)
        pat, lat = (slice(0, P), slice(P, s)) if kind == "enc" else (slice(N, s), slice(0, N))
        src = slice(0, s) if kind == "enc" else lat  # tokens later frames may read
        k_src, v_src = k[:, :, :, src], v[:, :, :, src]
        m = k_src.shape[3]
        if past is None:
            kw, vw = _window(k_src, W), _window(v_src, W)  # b g t (W+1)m e
            ar = torch.arange(W + 1, device=h.device)
            ok = torch.arange(t, device=h.device)[:, None] - W + ar >= 0  # t W+1
            mask_w = ok.repeat_interleave(m, dim=1)[None, None, :, None, :]  # 1 1 t 1 (W+1)m
        else:
            pk, pv, pok = past
            kw = torch.cat((pk[:, :, None], k_src), dim=3)  # b g 1 (M+m) e
            vw = torch.cat((pv[:, :, None], v_src), dim=3)
            cur = torch.ones(b, m, dtype=torch.bool, device=h.device)
            mask_w = torch.cat((pok, cur), dim=1)[:, None, None, None, :]  # b 1 1 1 (M+m)
        loc = self._locality(kind, layer, h)  # heads s s, or None
        reps = kw.shape[3] // m  # frames in the window (keys ordered frame by frame)

        def bias(rows: slice, cols: slice, n_rep: int = 1) -> Tensor | None:
            return None if loc is None else loc[:, rows, cols].repeat(1, 1, n_rep)[None, :, None]

        out_l = attend_biased(q[:, :, :, lat], kw, vw, mask_w, attn.softcap, bias(lat, src, reps))
        if kind == "enc":  # patches read their own frame's patches
            kpat, vpat = k[:, :, :, pat], v[:, :, :, pat]
            out_p = attend_biased(q[:, :, :, pat], kpat, vpat, None, attn.softcap, bias(pat, pat))
            out = torch.cat((out_p, out_l), dim=3)
        else:  # patch queries read recent latents and their own frame's queries
            kp = torch.cat((kw, k[:, :, :, pat]), dim=3)
            vp = torch.cat((vw, v[:, :, :, pat]), dim=3)
            ones = torch.ones(*mask_w.shape[:-1], P, dtype=torch.bool, device=h.device)
            mask_p = torch.cat((mask_w.expand(*ones.shape[:-1], -1), ones), dim=-1)
            b_p = None if loc is None else torch.cat((bias(pat, lat, reps), bias(pat, pat)), -1)
            out_p = attend_biased(q[:, :, :, pat], kp, vp, mask_p, attn.softcap, b_p)
            out = torch.cat((out_l, out_p), dim=3)
        return attn.out(rearrange(out, "b h t s e -> b t s (h e)")), (k_src, v_src)

    def patchify(self, frames: Tensor) -> Tensor:
        """``[b, t, c, H, W]`` → ``[b, t, P, p*p*c]``."""
        p = self.cfg.patch
        return rearrange(frames, "b t c (h p) (w q) -> b t (h w) (p q c)", p=p, q=p)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """``[b, t, P, p*p*c]`` → ``[b, t, c, H, W]``."""
        p, g = self.cfg.patch, self.cfg.res // self.cfg.patch
        return rearrange(patches, "b t (h w) (p q c) -> b t c (h p) (w q)", h=g, w=g, p=p, q=p)

    def sample_mae_mask(
        self,
        b: int,
        t: int,
        device: torch.device | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw the MAE drop pattern: per image ``p ~ U(0, mae_max_ratio)``, each patch dropped w.p. ``p``.

        Returns:
            ``(ratios [b, t], drop [b, t, P] bool)``.
        """
        ratios = torch.rand(b, t, device=device, generator=generator) * self.cfg.mae_max_ratio
        u = torch.rand(b, t, self.cfg.n_patches, device=device, generator=generator)
        return ratios, u < ratios[..., None]

    def _drop_mask(
        self, b: int, t: int, mask_ratio: float | None, device: torch.device
    ) -> Tensor | None:
        if mask_ratio is None:
            return self.sample_mae_mask(b, t, device)[1] if self.training else None
        if mask_ratio <= 0.0:
            return None
        return torch.rand(b, t, self.cfg.n_patches, device=device) < mask_ratio

    def _embed_frames(self, frames: Tensor, drop: Tensor | None) -> Tensor:
        """``frames [b, t, c, H, W]`` → encoder tokens ``[b, t, P + N, d]``."""
        b, t = frames.shape[:2]
        x = self.patch_embed(self.patchify(frames * 2.0 - 1.0))  # b t P d
        if drop is not None:
            x = torch.where(drop[..., None], self.mask_embed.to(x.dtype), x)
        lat = repeat(self.enc_latents, "n d -> b t n d", b=b, t=t).to(x.dtype)
        return torch.cat((x, lat), dim=2)

    def _bottleneck(self, x: Tensor) -> Tensor:
        """Latent-token outputs ``[b, t, N, d]`` → ``z [b, t, n_z, d_z]`` in (-1, 1)."""
        z = torch.tanh(self.to_bottleneck(self.enc_norm(x)))  # b t N D
        return z.reshape(*z.shape[:2], self.cfg.n_z, self.cfg.d_z)

    def _embed_latents(self, z: Tensor) -> Tensor:
        """``z [b, t, n_z, d_z]`` → decoder tokens ``[b, t, N + P, d]``."""
        c = self.cfg
        b, t = z.shape[:2]
        lat = self.from_bottleneck(z.reshape(b, t, c.n_latents, c.bottleneck)) + self.dec_latents
        q = repeat(self.patch_queries, "p d -> b t p d", b=b, t=t).to(lat.dtype)
        return torch.cat((lat, q), dim=2)

    def _to_frames(self, x: Tensor, clamp: bool) -> Tensor:
        """Patch-query outputs ``[b, t, P, d]`` → frames ``[b, t, c, H, W]``."""
        y = self.unpatchify(self.to_pixels(self.dec_norm(x))) * 0.5 + 0.5
        return y.clamp(0.0, 1.0) if clamp else y

    # ------------------------------------------------------------------------------------ public
    def encode(
        self, frames: Tensor, mask_ratio: float | None = 0.0, drop_mask: Tensor | None = None
    ) -> Tensor:
        """Encode a clip.

        Args:
            frames: ``[b, t, c, H, W]`` float in [0, 1].
            mask_ratio: MAE patch-drop probability; ``None`` draws ``p ~ U(0, mae_max_ratio)`` per
                image in training mode (no dropping in eval mode); ``0.0`` drops nothing.
            drop_mask: explicit bool ``[b, t, P]`` of patches to replace by the mask embedding
                (e.g. from :meth:`sample_mae_mask`); overrides ``mask_ratio``.
        Returns:
            ``z [b, t, n_z, d_z]`` in (-1, 1).
        """
        check_frames(frames, self.cfg)
        b, t = frames.shape[:2]
        if drop_mask is not None:
            if tuple(drop_mask.shape) != (b, t, self.cfg.n_patches):
                raise ValueError(
                    f"drop_mask must be bool [{b}, {t}, {self.cfg.n_patches}], got {tuple(drop_mask.shape)}"
                )
            drop = drop_mask.to(device=frames.device, dtype=torch.bool)
        else:
            drop = self._drop_mask(b, t, mask_ratio, frames.device)
        x = self._embed_frames(frames, drop)  # b t s d
        rope = self._rope("enc", torch.arange(t, device=frames.device))
        x = self._run_clip(x, self.enc_blocks, rope, "enc")
        return self._bottleneck(x[:, :, self.cfg.n_patches :])

    def decode(self, z: Tensor, clamp: bool = True) -> Tensor:
        """Decode a clip of latents.

        Args:
            z: ``[b, t, n_z, d_z]``.
            clamp: clamp the output to [0, 1] (turn off for training losses).
        Returns:
            frames ``[b, t, c, H, W]``.
        """
        c = self.cfg
        if z.dim() != 4 or tuple(z.shape[-2:]) != (c.n_z, c.d_z):
            raise ValueError(f"expected z [b, t, {c.n_z}, {c.d_z}], got {tuple(z.shape)}")
        t = z.shape[1]
        x = self._embed_latents(z)  # b t s d
        rope = self._rope("dec", torch.arange(t, device=z.device))
        x = self._run_clip(x, self.dec_blocks, rope, "dec")
        return self._to_frames(x[:, :, c.n_latents :], clamp)

    def forward(self, frames: Tensor, mask_ratio: float | None = None) -> tuple[Tensor, Tensor]:
        """Reconstruct a clip (training entry point).

        Args:
            frames: ``[b, t, c, H, W]`` float in [0, 1].
            mask_ratio: as in :meth:`encode` (default: MAE sampling in training mode).
        Returns:
            ``(recon [b, t, c, H, W] unclamped, z [b, t, n_z, d_z])``.
        """
        z = self.encode(frames, mask_ratio)
        return self.decode(z, clamp=False), z

    def encoder_stream(self, batch: int) -> EncoderStream:
        """A stream that encodes one frame per :meth:`EncoderStream.step` (no MAE dropping)."""
        return EncoderStream(self, batch)

    def decoder_stream(self, batch: int) -> DecoderStream:
        """A stream that decodes one frame per :meth:`DecoderStream.step`."""
        return DecoderStream(self, batch)


def attend_biased(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, softcap: float | None, bias: Tensor | None
) -> Tensor:
    """Scaled dot-product attention with soft-capped logits plus an additive ``bias``.

    Args:
        q: ``[b, h, ..., n, e]`` queries; ``k, v``: ``[b, g, ..., m, e]`` (GQA when ``g < h``).
        mask: bool, True = may attend, broadcastable to the ``[b, h, ..., n, m]`` logits; None = all.
        softcap: logit soft cap (applied before the bias); None = no cap.
        bias: float, broadcastable to the logits; None = no bias.
    Returns:
        ``[b, h, ..., n, e]``.
    """
    h, g = q.shape[1], k.shape[1]
    if g != h:
        k = k.repeat_interleave(h // g, dim=1)
        v = v.repeat_interleave(h // g, dim=1)
    scale = 1.0 / math.sqrt(q.shape[-1])
    if softcap is not None:
        logits = softcap * torch.tanh((q * (scale / softcap)) @ k.transpose(-1, -2))
    else:
        logits = (q * scale) @ k.transpose(-1, -2)
    logits = logits.float()
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1).to(v.dtype) @ v


def _window(x: Tensor, w: int) -> Tensor:
    """For each frame, its ``w`` predecessors and itself: ``[b, g, t, m, e]`` → ``[b, g, t, (w+1)*m, e]``
    (oldest first; frames before the clip are zeros, to be masked)."""
    if w == 0:
        return x
    t = x.shape[2]
    xp = F.pad(x, (0, 0, 0, 0, w, 0))
    return torch.cat([xp[:, :, j : j + t] for j in range(w + 1)], dim=3)


class _Stream:
    """Per-layer keys/values of the last ``window`` frames, with per-row validity for partial resets."""

    kind = "enc"

    def __init__(self, tok: TransformerTokenizer, batch: int) -> None:
        self.tok, self.batch = tok, batch
        self.t = 0
        w = tok.cfg.window
        # one entry per past frame: ([(k, v) per layer, each [b, g, m, e]], valid [b] bool)
        self.frames: deque[tuple[list[tuple[Tensor, Tensor]], Tensor]] = deque(maxlen=max(w, 1))

    def reset(self, rows: Tensor | None = None) -> None:
        """Forget the past of every row (``rows=None``) or of the rows where ``rows`` (bool ``[b]``) is set."""
        if rows is None:
            self.frames.clear()
            return
        for _, valid in self.frames:
            valid &= ~rows.to(valid.device)

    def _run(self, x: Tensor, blocks: nn.ModuleList) -> Tensor:
        """Run one frame's tokens ``x [b, 1, s, d]`` through ``blocks`` against the cache, then cache
        this frame's readable keys/values."""
        tok, b, dev = self.tok, x.shape[0], x.device
        if b != self.batch:
            raise ValueError(f"this stream was opened for batch {self.batch}, got a batch of {b}")
        window = tok.cfg.window
        past = list(self.frames) if window else []
        rope = tok._rope(self.kind, torch.tensor([self.t], device=dev))
        ok = None
        if past:  # validity of every cached key, oldest frame first
            m = past[0][0][0][0].shape[2]
            ok = torch.cat([valid[:, None].expand(b, m) for _, valid in past], 1)
        new_cache = []
        for i, blk in enumerate(blocks):
            cached = None
            if past:
                pk = torch.cat([kv[i][0] for kv, _ in past], 2)
                pv = torch.cat([kv[i][1] for kv, _ in past], 2)
                cached = (pk, pv, ok)
            a, (k, v) = tok._attention(blk, blk.norm1(x), rope, self.kind, cached, layer=i)
            x = x + a
            x = x + blk.mlp(blk.norm2(x))
            new_cache.append((k[:, :, 0].contiguous(), v[:, :, 0].contiguous()))  # own storage
        if window:
            self.frames.append((new_cache, torch.ones(b, dtype=torch.bool, device=dev)))
        self.t += 1
        return x


class EncoderStream(_Stream):
    """Encode frames one at a time; ``step`` equals the matching frame of :meth:`TransformerTokenizer.encode`."""

    kind = "enc"

    @torch.no_grad()
    def step(self, frame: Tensor) -> Tensor:
        """Args: frame ``[b, c, H, W]`` in [0, 1]. Returns: ``z [b, n_z, d_z]``."""
        tok = self.tok
        check_frames(frame, tok.cfg, ndim=4)
        x = tok._embed_frames(frame[:, None], None)  # b 1 s d
        x = self._run(x, tok.enc_blocks)
        return tok._bottleneck(x[:, :, tok.cfg.n_patches :])[:, 0]


class DecoderStream(_Stream):
    """Decode latents one frame at a time, caching only the latent tokens' keys/values."""

    kind = "dec"

    @torch.no_grad()
    def step(self, z: Tensor, clamp: bool = True) -> Tensor:
        """Args: z ``[b, n_z, d_z]``. Returns: frame ``[b, c, H, W]``."""
        tok, c = self.tok, self.tok.cfg
        if z.dim() != 3 or tuple(z.shape[-2:]) != (c.n_z, c.d_z):
            raise ValueError(f"expected z [b, {c.n_z}, {c.d_z}], got {tuple(z.shape)}")
        x = tok._embed_latents(z[:, None])  # b 1 s d
        x = self._run(x, tok.dec_blocks)
        return tok._to_frames(x[:, :, c.n_latents :], clamp)[:, 0]
