"""KV-cached sampler: equality with the uncached reference, bounded cache, noisy context, resets."""

from __future__ import annotations

import pytest
import torch

from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel
from lol_dreamer.sampler import Sampler

TAU_CTX = 58 / 64


def _model(name: str = "test", **kw) -> DynamicsModel:
    torch.manual_seed(0)
    if name == "test":
        kw = {"n_z": 8, "d_z": 4, **kw}
    model = DynamicsModel(DynamicsConfig.preset(name, **kw)).eval()
    if model.cfg.kalman_skip:  # a real frame-to-frame correlation, so the filter matters
        cfg = model.cfg
        rho = torch.rand(cfg.n_z, cfg.d_z, generator=torch.Generator().manual_seed(5))
        model.set_latent_stats(torch.zeros(cfg.n_z, cfg.d_z), torch.ones(cfg.n_z, cfg.d_z), rho)
    return model


KALMAN = pytest.mark.parametrize("kalman", [False, True], ids=["plain", "kalman"])


def _actions(n: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.cat(
        (torch.randint(0, 19, (n, t, 1), generator=g), torch.randint(0, 2, (n, t, 8), generator=g)),
        -1,
    )


def _run(
    model,
    use_cache,
    window="context",
    n_frames=8,
    ctx=None,
    ctx_act=None,
    acts=None,
    dtype=torch.float32,
    **kw,
):
    s = Sampler(model, k=4, use_cache=use_cache, uncached_window=window, dtype=dtype)
    g = torch.Generator().manual_seed(7)
    state = s.start(ctx, ctx_act, task=kw.get("task"), n_streams=kw.get("n_streams"), generator=g)
    frames, feats = [], []
    for f in range(n_frames):
        z, a = s.step(state, None if acts is None else acts[:, f], generator=g)
        frames.append(z)
        feats.append(a)
    return torch.stack(frames, 1), feats, state


@KALMAN
def test_cached_equals_uncached_nano(kalman):
    model = _model("nano", kalman_skip=kalman)
    cfg = model.cfg
    ctx = torch.randn(2, 3, cfg.n_z, cfg.d_z).tanh()
    ctx_act, acts = _actions(2, 3, 1), _actions(2, 8, 2)
    cached, _, _ = _run(model, True, ctx=ctx, ctx_act=ctx_act, acts=acts)
    uncached, _, _ = _run(model, False, ctx=ctx, ctx_act=ctx_act, acts=acts)
    assert cached.shape == (2, 8, cfg.n_z, cfg.d_z)
    assert (cached - uncached).abs().max() <= 1e-4
    assert cached[:, 1:].sub(cached[:, :-1]).abs().max() > 1e-2  # frames actually differ


@KALMAN
def test_cached_equals_full_recompute_beyond_the_window(kalman):
    # Context 4, 14 frames: the cache evicts; recomputing the whole history with the same windowed
    # attention must still agree, for every stream and for the agent features.
    model = _model(context=4, n_agent=2, kalman_skip=kalman, latent_scale=3.0 if kalman else 1.0)
    ctx = torch.randn(3, 2, 8, 4).tanh()
    task = torch.tensor([0, 1, 2])
    kw = dict(n_frames=14, ctx=ctx, ctx_act=_actions(3, 2), acts=_actions(3, 14, 3), task=task)
    cached, fc, _ = _run(model, True, **kw)
    full, ff, _ = _run(model, False, window=None, **kw)
    assert (cached - full).abs().max() <= 1e-4
    assert max((a - b).abs().max() for a, b in zip(fc, ff)) <= 1e-4
    assert fc[0].shape == (3, 2, model.cfg.dim)


@KALMAN
def test_cached_equals_uncached_from_pure_noise(kalman):
    model = _model(kalman_skip=kalman)
    cached, _, _ = _run(model, True, n_frames=5, n_streams=2)
    uncached, _, _ = _run(model, False, n_frames=5, n_streams=2)
    assert (cached - uncached).abs().max() <= 1e-4


def test_windowed_recompute_carries_the_latent_filter():
    """The uncached path recomputes only the last ``context`` frames, but the latent filter runs
    over the whole history: with the network's output zeroed the frames come from the filter
    alone, so the windowed reference equals the cached path far beyond the window."""
    model = _model(context=3, kalman_skip=True, latent_scale=2.0)
    with torch.no_grad():
        model.z_out.weight.zero_()
        model.z_out.bias.zero_()
    kw = dict(n_frames=9, ctx=torch.randn(2, 4, 8, 4).tanh(), ctx_act=_actions(2, 4))
    cached, _, state = _run(model, True, **kw)
    windowed, _, _ = _run(model, False, window="context", **kw)
    assert (cached - windowed).abs().max() <= 1e-5
    assert state.filter_state[0].shape == (2, 8, 4)


def test_cache_bounded_and_positions_monotone():
    model = _model(context=5)
    s = Sampler(model, k=4)
    g = torch.Generator().manual_seed(0)
    state = s.start(torch.randn(2, 3, 8, 4), _actions(2, 3), generator=g)
    assert state.pos.tolist() == [3, 3]
    acts = _actions(2, 30)
    for f in range(30):
        before = state.pos.clone()
        s.step(state, acts[:, f], generator=g)
        assert torch.equal(state.pos, before + 1)  # positions only increase
        assert set(state.cache.layers) == set(model.cfg.time_layers)
        for kv in state.cache.layers.values():
            assert kv.k.shape[2] == kv.v.shape[2] == 4  # never more than context - 1 past frames
            assert int(kv.valid.sum(1).max()) <= 4
            newest = int(state.pos[0]) - 1
            want = set(range(max(0, newest - 3), newest + 1))
            for row in range(2):
                assert set(kv.pos[row][kv.valid[row]].tolist()) == want
    assert state.cache.entries().tolist() == [4, 4]


def test_context_is_noised_the_way_it_is_labelled():
    model = _model()
    calls = []

    def record(module, args, kwargs):
        calls.append((args[0].clone(), args[1].clone(), args[2].clone()))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    s = Sampler(model, k=4)
    ctx = torch.rand(2, 3, 8, 4) * 2 - 1
    g, replay = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    state = s.start(ctx, _actions(2, 3), generator=g)
    noise = torch.randn(ctx.shape, generator=replay)
    z_in, tau, step = calls[0]
    norm = model.normalize_latents  # the model's scale (latent_scale, stats)
    torch.testing.assert_close(z_in, (1 - TAU_CTX) * noise + TAU_CTX * norm(ctx), rtol=0, atol=1e-6)
    assert bool((tau == 58).all()) and bool((step == 6).all())
    assert (z_in - ctx).abs().mean() > 0.02  # not fed clean

    z, _ = s.step(state, _actions(2, 1)[:, 0], generator=g)
    handle.remove()
    assert len(calls) == 1 + 4 + 1  # K denoising passes, then one context pass
    x0 = torch.randn((2, 8, 4), generator=replay)
    ctx_noise = torch.randn((2, 8, 4), generator=replay)
    torch.testing.assert_close(calls[1][0][:, 0], x0, rtol=0, atol=0)
    assert [int(c[1][0, 0]) for c in calls[1:5]] == [0, 16, 32, 48]  # τ = 0, 1/4, 1/2, 3/4
    assert all(int(c[2][0, 0]) == 2 for c in calls[1:5])  # d = 1/4
    z_in, tau, step = calls[5]
    torch.testing.assert_close(
        z_in[:, 0], (1 - TAU_CTX) * ctx_noise + TAU_CTX * norm(z), rtol=0, atol=1e-5
    )
    assert bool((tau == 58).all()) and bool((step == 6).all())


@KALMAN
def test_partial_reset(kalman):
    model = _model(context=6, kalman_skip=kalman, latent_scale=2.0 if kalman else 1.0)
    ctx, new_ctx = torch.randn(2, 3, 8, 4), torch.randn(1, 2, 8, 4)
    acts = _actions(2, 10, 4)
    mask = torch.tensor([True, False])
    outs = {}
    for mode in ("cached", "full", "no_reset"):
        s = Sampler(model, k=4, use_cache=mode != "full", uncached_window=None)
        g = torch.Generator().manual_seed(3)
        state = s.start(ctx, _actions(2, 3), generator=torch.Generator().manual_seed(1))
        frames = [s.step(state, acts[:, f], generator=g)[0] for f in range(5)]
        if mode != "no_reset":
            pos_before = state.pos.clone()
            s.reset_streams(
                state, mask, new_ctx, _actions(1, 2), generator=torch.Generator().manual_seed(2)
            )
            assert state.pos.tolist() == [int(pos_before[0]) + 2, int(pos_before[1])]
            if mode == "cached":
                assert state.cache.entries().tolist() == [2, 5]
        frames += [s.step(state, acts[:, f], generator=g)[0] for f in range(5, 10)]
        outs[mode] = torch.stack(frames, 1)
    assert (outs["cached"] - outs["full"]).abs().max() <= 1e-4
    torch.testing.assert_close(outs["cached"][1], outs["no_reset"][1], rtol=0, atol=1e-5)
    assert (outs["cached"][0, 5:] - outs["no_reset"][0, 5:]).abs().max() > 1e-3


def test_bf16_close_to_fp32():
    model = _model("nano")
    cfg = model.cfg
    ctx = torch.randn(1, 2, cfg.n_z, cfg.d_z).tanh()
    kw = dict(n_frames=3, ctx=ctx, ctx_act=_actions(1, 2), acts=_actions(1, 3))
    f32, _, _ = _run(model, True, **kw)
    b16, _, state = _run(model, True, dtype=torch.bfloat16, **kw)
    assert b16.dtype == torch.float32
    assert next(iter(state.cache.layers.values())).k.dtype == torch.bfloat16
    rel = (b16 - f32).norm() / f32.norm()
    assert rel < 0.05, rel


def test_bad_arguments_are_explained():
    model = _model()
    with pytest.raises(ValueError, match="power of two"):
        Sampler(model, k=3)
    s = Sampler(model)
    with pytest.raises(ValueError, match="n_streams"):
        s.start()
    state = s.start(n_streams=2)
    with pytest.raises(ValueError, match="actions must be"):
        s.step(state, torch.zeros(2, 8, dtype=torch.long))


def test_generation_depends_on_relative_positions_only():
    # A stream restarted late in a very long rollout (positions ~ 10^7) generates what a fresh stream
    # at position 0 generates: RoPE angles stay exact however far positions have grown.
    model = _model(context=4)
    ctx, acts = torch.randn(1, 3, 8, 4), _actions(1, 6)
    outs = []
    for first in (0, 10**7 + 3):
        s = Sampler(model, k=4)
        g = torch.Generator().manual_seed(9)
        state = s.start(ctx, _actions(1, 3), generator=g, start_pos=torch.tensor([first]))
        outs.append(torch.stack([s.step(state, acts[:, f], generator=g)[0] for f in range(6)], 1))
        assert int(state.pos[0]) == first + 3 + 6
    assert (outs[0] - outs[1]).abs().max() <= 1e-4


def test_generate_matches_start_and_step():
    model = _model()
    ctx, ctx_act, acts = torch.randn(2, 2, 8, 4), _actions(2, 2), _actions(2, 4, 5)
    stepped, _, _ = _run(model, True, n_frames=4, ctx=ctx, ctx_act=ctx_act, acts=acts)
    s = Sampler(model, k=4)
    gen = s.generate(4, ctx, ctx_act, acts, generator=torch.Generator().manual_seed(7))
    assert torch.equal(gen, stepped)
    # K = 1 and K = 64 are valid step counts too
    for k in (1, 64):
        z = Sampler(model, k=k).generate(2, ctx, ctx_act, acts[:, :2])
        assert z.shape == (2, 2, 8, 4) and bool(torch.isfinite(z).all())


def test_latent_scale_is_carried_by_the_model():
    """A model with stats (m, s) on latents z·s + m dreams exactly s·(identity model on z) + m."""
    plain = _model()
    scaled = _model()
    g = torch.Generator().manual_seed(5)
    mean = torch.randn(8, 4, generator=g)
    std = torch.rand(8, 4, generator=g) * 0.2 + 0.05
    scaled.set_latent_stats(mean, std)
    ctx = torch.randn(2, 3, 8, 4, generator=g)
    acts = _actions(2, 4)
    want, _, _ = _run(plain, True, n_frames=4, ctx=ctx, ctx_act=_actions(2, 3), acts=acts)
    got, _, _ = _run(
        scaled, True, n_frames=4, ctx=ctx * std + mean, ctx_act=_actions(2, 3), acts=acts
    )
    torch.testing.assert_close(got, want * std + mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scaled.normalize_latents(scaled.denormalize_latents(ctx)), ctx)
    with pytest.raises(ValueError, match="latent stats must be"):
        scaled.set_latent_stats(mean[:4], std)
