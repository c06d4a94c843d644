"""CNN tokenizer baseline: same interface and latent layout as the transformer tokenizer."""

from __future__ import annotations

import pytest
import torch

from lol_dreamer.models import build_tokenizer
from lol_dreamer.models.cnn_tokenizer import CNNTokenizer, latent_grid
from lol_dreamer.models.tokenizer import TokenizerConfig
from lol_dreamer.models.tokenizer_config import PRESETS

RES = 32


def make_cnn() -> CNNTokenizer:
    return CNNTokenizer(TokenizerConfig.preset("test", res=RES, arch="cnn")).eval()


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("res", [64, 128, 352])
def test_cnn_presets_share_latent_layout_with_transformer(name, res):
    cnn_cfg = TokenizerConfig.preset(name, res=res, arch="cnn")
    tf_cfg = TokenizerConfig.preset(name, res=res)
    assert (cnn_cfg.n_z, cnn_cfg.d_z) == (tf_cfg.n_z, tf_cfg.d_z)
    side, ch = latent_grid(cnn_cfg)
    assert res % side == 0 and side * side * ch == cnn_cfg.n_z * cnn_cfg.d_z
    with torch.device("meta"):
        tok = build_tokenizer(cnn_cfg.to_dict())
        z = tok.encode(torch.empty(1, 1, 3, res, res))
        y = tok.decode(z)
    assert isinstance(tok, CNNTokenizer)
    assert tuple(z.shape) == (1, 1, cnn_cfg.n_z, cnn_cfg.d_z) and tuple(y.shape) == (
        1,
        1,
        3,
        res,
        res,
    )


def test_cnn_frames_are_independent_and_streams_match_clip():
    tok = make_cnn()
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(2, 4, 3, RES, RES)
    with torch.no_grad():
        z = tok.encode(x)
        y = tok.decode(z)
    assert z.abs().max() < 1
    enc, dec = tok.encoder_stream(2), tok.decoder_stream(2)
    zs = torch.stack([enc.step(x[:, i]) for i in range(4)], 1)
    ys = torch.stack([dec.step(z[:, i]) for i in range(4)], 1)
    torch.testing.assert_close(zs, z, rtol=0, atol=1e-5)
    torch.testing.assert_close(ys, y, rtol=0, atol=1e-5)
    x2 = x.clone()
    x2[1, 2] = torch.rand_like(
        x2[1, 2]
    )  # other rows and frames are untouched (GroupNorm, no BatchNorm)
    z2 = tok.encode(x2)
    changed = (z2 - z).abs().amax(dim=(2, 3)) > 0
    assert changed.tolist() == [[False] * 4, [False, False, True, False]]


def test_cnn_overfits_a_few_frames():
    tok = CNNTokenizer(TokenizerConfig.preset("test", res=RES, arch="cnn")).train()
    frames = torch.zeros(2, 1, 3, RES, RES)
    frames[0, 0, 1, 4:20, 6:14] = 1.0
    frames[1, 0, 0, 10:30, 16:28] = 0.7
    opt = torch.optim.Adam(tok.parameters(), lr=2e-3)
    losses = []
    for _ in range(80):
        recon, _ = tok(frames)
        loss = (recon - frames).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])


def _perturbed_cnn() -> CNNTokenizer:
    tok = make_cnn()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return tok


def test_cnn_channels_last_path_equals_plain_convolutions():
    tok = _perturbed_cnn()
    x = torch.rand(2, 3, 3, RES, RES)
    with torch.no_grad():
        z = tok.encode(x)
        y = tok.decode(z)
        enc = torch.tanh(tok.encoder((x * 2 - 1).flatten(0, 1)))  # NCHW memory order throughout
        y_ref = (tok.decoder(enc) * 0.5 + 0.5).clamp(0, 1)
    z_ref = enc.permute(0, 2, 3, 1).reshape(6, tok.cfg.n_z, tok.cfg.d_z)  # (h w c) latent layout
    torch.testing.assert_close(z.flatten(0, 1), z_ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(y.flatten(0, 1), y_ref, rtol=0, atol=1e-5)
    assert y.is_contiguous()


def test_cnn_bf16_autocast_decode_returns_fp32_frames_close_to_fp32():
    tok = _perturbed_cnn()
    z = tok.encode(torch.rand(2, 2, 3, RES, RES)).detach()
    with torch.no_grad():
        ref = tok.decode(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tok.decode(z)
    assert low.dtype == torch.float32  # the output conv runs in fp32
    assert (low - ref).abs().max() < 4 / 255
