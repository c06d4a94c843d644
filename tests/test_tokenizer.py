"""Block-causal transformer tokenizer: masks, MAE, streaming == clip, presets, learning."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lol_dreamer.models import build_tokenizer
from lol_dreamer.models.tokenizer import TokenizerConfig, TransformerTokenizer, mask_rule
from lol_dreamer.models.tokenizer_config import PRESETS

RES = 32


def make_tok(depth: int = 2, window: int = 2, **kw) -> TransformerTokenizer:
    cfg = TokenizerConfig.preset("test", res=RES)
    cfg = TokenizerConfig.from_dict(
        {**cfg.to_dict(), "enc_depth": depth, "dec_depth": depth, "window": window, **kw}
    )
    tok = TransformerTokenizer(cfg).eval()
    with torch.no_grad():  # break the zero/near-zero init so every path carries signal
        for p in tok.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return tok


def test_config_round_trip_and_validation():
    cfg = TokenizerConfig.preset("nano")
    again = TokenizerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert (cfg.n_z, cfg.d_z) == (32, 32) and cfg.n_z * cfg.d_z == cfg.n_latents * cfg.bottleneck
    with pytest.raises(ValueError, match="unknown TokenizerConfig keys"):
        TokenizerConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="must divide"):
        TokenizerConfig(res=100, patch=8)
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        TokenizerConfig.preset("huge")


def test_mask_rule_matches_spec():
    lat = torch.tensor([False, True])  # one patch, one latent
    dt = torch.tensor([[0, 0], [0, 0]])
    enc = mask_rule("enc", lat, lat, dt, window=1)
    assert enc.tolist() == [[True, False], [True, True]]  # patch sees patch only; latent sees all
    dec = mask_rule("dec", lat, lat, dt, window=1)
    assert dec.tolist() == [
        [True, True],
        [False, True],
    ]  # query sees query + latent; latent only latent
    far = torch.full((2, 2), 2)
    assert not mask_rule("enc", lat, lat, far, window=1).any()  # outside the window
    past = torch.ones(2, 2, dtype=torch.long)
    assert mask_rule("enc", lat, lat, past, window=1).tolist() == [[False, False], [True, True]]
    assert not mask_rule("enc", lat, lat, -past, window=1).any()  # never the future


def test_encoder_causal_in_time_and_window_bounded():
    tok = make_tok(depth=1, window=1)
    x = torch.rand(2, 5, 3, RES, RES)
    z = tok.encode(x)
    x2 = x.clone()
    x2[:, 2] = torch.rand_like(x2[:, 2])
    z2 = tok.encode(x2)
    diff = (z2 - z).abs().amax(dim=(0, 2, 3))
    assert torch.all(diff[:2] == 0)  # the past is untouched
    assert diff[2] > 1e-3 and diff[3] > 1e-3  # the frame itself and the next one (window 1) change
    assert diff[4] == 0  # one layer, window 1: frame 4 cannot see frame 2


def test_mae_hidden_patches_do_not_reach_latents():
    tok = make_tok()
    x = torch.rand(2, 3, 3, RES, RES)
    _, drop = tok.sample_mae_mask(2, 3)
    drop[0, 0, 0] = True
    noise = tok.patchify(torch.rand_like(x))
    patches = torch.where(drop[..., None], noise, tok.patchify(x))
    x2 = tok.unpatchify(patches)
    assert not torch.equal(x, x2)
    torch.testing.assert_close(
        tok.encode(x, drop_mask=drop), tok.encode(x2, drop_mask=drop), rtol=0, atol=0
    )
    assert not torch.allclose(tok.encode(x), tok.encode(x2))  # visible, the change does matter


def test_mae_ratio_distribution_and_dropped_fraction():
    cfg = TokenizerConfig.from_dict(
        {**TokenizerConfig.preset("test", res=64).to_dict(), "patch": 4}
    )
    tok = TransformerTokenizer(cfg)
    n = 4000
    ratios, drop = tok.sample_mae_mask(n, 1, generator=torch.Generator().manual_seed(0))
    r = ratios.flatten().sort().values / cfg.mae_max_ratio
    ks = (r - torch.arange(1, n + 1) / n).abs().max().item()
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov–Smirnov at the 1% level vs U(0, 0.9)
    assert ratios.min() >= 0 and ratios.max() < cfg.mae_max_ratio
    frac = drop.float().mean(-1)  # 256 patches per image
    assert (frac - ratios).abs().mean() < 0.03
    assert abs(frac.mean().item() - 0.45) < 0.01


def test_mask_ratio_none_samples_only_in_training():
    tok = make_tok()
    x = torch.rand(1, 2, 3, RES, RES)
    torch.testing.assert_close(tok.encode(x, mask_ratio=None), tok.encode(x, mask_ratio=0.0))
    tok.train()
    assert not torch.allclose(tok.encode(x, mask_ratio=None), tok.encode(x, mask_ratio=0.0))


def test_decoder_causal_in_time():
    tok = make_tok(depth=1, window=1)
    z = torch.rand(2, 5, tok.cfg.n_z, tok.cfg.d_z) * 2 - 1
    y = tok.decode(z, clamp=False)
    z2 = z.clone()
    z2[:, 2] += 0.5
    diff = (tok.decode(z2, clamp=False) - y).abs().amax(dim=(0, 2, 3, 4))
    assert torch.all(diff[:2] == 0)
    assert diff[2] > 1e-4 and diff[3] > 1e-4 and diff[4] == 0


@pytest.mark.parametrize("window", [0, 1, 3])
def test_streaming_matches_clip(window):
    tok = make_tok(depth=2, window=window)
    x = torch.rand(2, 6, 3, RES, RES)
    with torch.no_grad():
        z = tok.encode(x)
        y = tok.decode(z)
    enc, dec = tok.encoder_stream(2), tok.decoder_stream(2)
    zs = torch.stack([enc.step(x[:, i]) for i in range(6)], 1)
    ys = torch.stack([dec.step(z[:, i]) for i in range(6)], 1)
    torch.testing.assert_close(zs, z, rtol=0, atol=1e-5)
    torch.testing.assert_close(ys, y, rtol=0, atol=1e-5)
    tok.dense_attention = True  # and against the dense masked reference (mask_rule)
    with torch.no_grad():
        torch.testing.assert_close(zs, tok.encode(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(ys, tok.decode(z), rtol=0, atol=1e-5)
    assert len(enc.frames) == window and len(dec.frames) == window  # bounded cache
    if window:
        # the decoder caches latent tokens only: [b, g, window * N, e] per layer
        k = torch.cat([f[0][0][0] for f in dec.frames], 2)
        assert k.shape[2] == window * tok.cfg.n_latents


def test_stream_partial_reset():
    tok = make_tok(depth=2, window=2)
    x = torch.rand(2, 6, 3, RES, RES)
    enc = tok.encoder_stream(2)
    for i in range(4):
        enc.step(x[:, i])
    enc.reset(torch.tensor([True, False]))
    zs = torch.stack([enc.step(x[:, i]) for i in (4, 5)], 1)
    with torch.no_grad():
        fresh = tok.encode(x[:1, 4:6])
        full = tok.encode(x[1:])
    torch.testing.assert_close(zs[:1], fresh, rtol=0, atol=1e-5)
    torch.testing.assert_close(zs[1:], full[:, 4:6], rtol=0, atol=1e-5)


def test_presets_build_on_meta_with_expected_sizes():
    counts = {}
    for name in PRESETS:
        for res in (128, 352):
            cfg = TokenizerConfig.preset(name, res=res)
            with torch.device("meta"):
                tok = build_tokenizer(cfg.to_dict())
            counts[(name, res)] = sum(p.numel() for p in tok.parameters())
    print({k: f"{v / 1e6:.2f}M" for k, v in counts.items()})
    targets = {"tiny": 7e6, "small": 53e6, "medium": 115e6, "large": 307e6}
    for name, target in targets.items():
        assert abs(counts[(name, 352)] - target) / target < 0.1, (name, counts[(name, 352)])
    assert counts[("nano", 128)] < 3e6


def test_build_tokenizer_rebuilds_from_config_alone():
    tok = make_tok()
    again = build_tokenizer(json.loads(json.dumps(tok.cfg.to_dict())))
    again.load_state_dict(tok.state_dict())
    again.eval()
    x = torch.rand(1, 2, 3, RES, RES)
    torch.testing.assert_close(again.decode(again.encode(x)), tok.decode(tok.encode(x)))


def test_bad_inputs_get_clear_errors():
    tok = make_tok()
    with pytest.raises(ValueError, match=r"expected frames \[b, t, 3, 32, 32\]"):
        tok.encode(torch.rand(2, 32, 32, 3))
    with pytest.raises(ValueError, match="expected z"):
        tok.decode(torch.rand(2, 3, 5))
    with pytest.raises(ValueError, match="opened for batch 2"):
        tok.encoder_stream(2).step(torch.rand(3, 3, RES, RES))


def test_tiny_tokenizer_overfits_a_few_frames():
    torch.manual_seed(0)
    tok = TransformerTokenizer(TokenizerConfig.preset("test", res=RES)).train()
    frames = torch.zeros(2, 2, 3, RES, RES)
    frames[0, :, 0, 4:20, 6:14] = 1.0  # a red block
    frames[1, :, 2, 10:30, 16:28] = 0.8  # a blue block
    frames[:, 1] = frames[:, 1].roll(2, dims=-1)  # moves between frames
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        recon, _ = tok(frames, mask_ratio=0.0)
        loss = (recon - frames).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("window", [0, 1, 3])
def test_structured_attention_equals_dense_masked_attention(window):
    tok = make_tok(depth=2, window=window)
    x = torch.rand(2, 5, 3, RES, RES)
    z = tok.encode(x)
    y = tok.decode(z, clamp=False)
    tok.dense_attention = True
    torch.testing.assert_close(tok.encode(x), z, rtol=0, atol=1e-5)
    torch.testing.assert_close(tok.decode(z, clamp=False), y, rtol=0, atol=1e-5)


def test_meta_built_model_materialises_correctly():
    tok = make_tok()
    with torch.device("meta"):
        lazy = TransformerTokenizer(tok.cfg)
    lazy = lazy.to_empty(device="cpu")
    lazy.load_state_dict(tok.state_dict())
    lazy.eval()
    x = torch.rand(1, 3, 3, RES, RES)
    torch.testing.assert_close(lazy.decode(lazy.encode(x)), tok.decode(tok.encode(x)))


def _fresh_tok(spatial_bias: bool = True) -> TransformerTokenizer:
    """A freshly initialised one-layer ``test`` tokenizer (4×4 patches, 4×4 latents at 32 px) whose
    pixel head is randomised, so the decoder's output depends on its input from the start."""
    torch.manual_seed(0)
    cfg = TokenizerConfig.from_dict(
        {**TokenizerConfig.preset("test", res=RES).to_dict(), "spatial_bias": spatial_bias}
    )
    tok = TransformerTokenizer(cfg).eval()
    torch.nn.init.normal_(tok.to_pixels.weight, std=0.1)
    return tok


def _encoder_spread(tok: TransformerTokenizer) -> torch.Tensor:
    """How much each latent token changes ``[N]`` when only the top-left patch changes."""
    c = tok.cfg
    x = torch.rand(4, 1, 3, RES, RES)
    x2 = x.clone()
    x2[..., : c.patch, : c.patch] = torch.rand(4, 1, 3, c.patch, c.patch)
    with torch.no_grad():
        dz = (tok.encode(x2) - tok.encode(x)).reshape(4, c.n_latents, c.bottleneck)
    return dz.abs().mean(dim=(0, 2))


def _decoder_spread(tok: TransformerTokenizer) -> torch.Tensor:
    """How much each decoded patch changes ``[P]`` when only the first latent token changes."""
    c = tok.cfg
    z = (torch.rand(4, 1, c.n_latents, c.bottleneck) * 2 - 1).clamp(-0.9, 0.9)
    z2 = z.clone()
    z2[:, :, 0] = -z2[:, :, 0]
    with torch.no_grad():
        y = tok.decode(z.reshape(4, 1, c.n_z, c.d_z), clamp=False)
        y2 = tok.decode(z2.reshape(4, 1, c.n_z, c.d_z), clamp=False)
    return tok.patchify(y2 - y).abs().mean(dim=(0, 1, 3))


def test_latents_read_their_own_region_from_the_start():
    # The top-left latent sits on the top-left patch: changing that patch must reach it far more
    # than the latents elsewhere. Without the spatial bias every latent starts out reading a
    # near-uniform average of the frame, and training collapses to the mean frame.
    spread = _encoder_spread(_fresh_tok())
    assert spread.argmax() == 0
    assert spread[0] > 20 * spread[1:].mean(), spread
    uniform = _encoder_spread(_fresh_tok(spatial_bias=False))
    assert uniform[0] < 3 * uniform[1:].median(), uniform  # what the test guards against


def test_decoded_patches_read_their_own_latents_from_the_start():
    spread = _decoder_spread(_fresh_tok())
    assert spread.argmax() == 0
    assert spread[0] > 20 * spread[1:].mean(), spread
    uniform = _decoder_spread(_fresh_tok(spatial_bias=False))
    assert uniform[0] < 3 * uniform[1:].median(), uniform


def test_spatial_bias_parameters_are_learned_and_old_configs_rebuild_without_them():
    tok = _fresh_tok()
    x = torch.rand(2, 1, 3, RES, RES)
    recon, _ = tok.train()(x, mask_ratio=0.0)
    (recon - x).pow(2).mean().backward()
    for name in ("enc_locality", "enc_offsets", "dec_locality", "dec_offsets"):
        assert getattr(tok, name).grad.abs().sum() > 0, name
    old = {k: v for k, v in tok.cfg.to_dict().items() if k != "spatial_bias"}
    assert TokenizerConfig.from_dict(old).spatial_bias is False
    assert not hasattr(build_tokenizer(old), "enc_locality")
