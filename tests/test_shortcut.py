"""Shortcut forcing: level grids, ramp weight, exact loss on a closed-form network, learning."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel
from lol_dreamer.objectives.shortcut import (
    ShortcutConfig,
    ShortcutObjective,
    context_prefix,
    ramp_weight,
    sample_levels,
    sequence_length,
    shortcut_loss,
)

K_MAX = 64


class LinearStandIn(nn.Module):
    """``ẑ1 = α·z + β·τ + γ·step_idx`` elementwise: every pass is known in closed form."""

    def __init__(self, alpha: float = 0.6, beta: float = 0.3, gamma: float = -0.05) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(alpha))
        self.beta, self.gamma = beta, gamma
        self.calls: list[dict] = []

    def forward(
        self, z, tau_idx, step_idx, actions=None, labeled=None, task=None, independent=None
    ):
        self.calls.append(
            dict(
                actions=actions,
                labeled=labeled,
                independent=independent,
                t=z.shape[1],
                tau_idx=tau_idx,
                step_idx=step_idx,
            )
        )
        tau = (tau_idx.float() / K_MAX)[..., None, None]
        return SimpleNamespace(
            z1=self.alpha * z + self.beta * tau + self.gamma * step_idx[..., None, None].float()
        )


def test_level_grid_and_step_distribution():
    g = torch.Generator().manual_seed(0)
    tau_idx, step_idx = sample_levels((4000, 16), K_MAX, generator=g)
    k = 2**step_idx
    stride = K_MAX // k
    assert bool((tau_idx % stride == 0).all())  # τ is a multiple of d
    assert bool((tau_idx < K_MAX).all()) and bool((tau_idx >= 0).all())  # τ < 1
    counts = torch.bincount(step_idx.flatten(), minlength=7).float()
    assert counts.numel() == 7  # d ∈ {1, 1/2, ..., 1/64}
    expected = step_idx.numel() / 7
    assert bool(((counts - expected).abs() < 0.05 * expected).all())
    # within one step size, τ is uniform over its k grid points
    sel = tau_idx[step_idx == 2] // (K_MAX // 4)
    c4 = torch.bincount(sel, minlength=4).float()
    assert c4.numel() == 4 and bool(((c4 - c4.mean()).abs() < 0.08 * c4.mean()).all())


def test_ramp_weight():
    tau = torch.tensor([0.0, 0.5, 1.0, 58 / 64])
    torch.testing.assert_close(
        ramp_weight(tau), torch.tensor([0.1, 0.55, 1.0, 0.9 * 58 / 64 + 0.1])
    )


def _hand_loss(alpha, beta, gamma, z1, z0, tau_idx, step_idx):
    """Per-frame loop of SPEC §6 with the stand-in written out by hand; teacher uses sg(alpha)."""

    def f(a, z, tau, s):
        return a * z + beta * tau + gamma * s

    a_sg = alpha.detach()
    total, flow, boot = 0.0, [], []
    b, t = tau_idx.shape
    for i in range(b):
        for j in range(t):
            tau = tau_idx[i, j].item() / K_MAX
            s = step_idx[i, j].item()
            d = 2.0**-s
            zt = (1 - tau) * z0[i, j] + tau * z1[i, j]
            w = 0.9 * tau + 0.1
            if s == int(math.log2(K_MAX)):
                e = ((f(alpha, zt, tau, s) - z1[i, j]) ** 2).mean()
                flow.append(w * e)
            else:
                h = d / 2
                b1 = (f(a_sg, zt, tau, s + 1) - zt) / (1 - tau)
                zm = zt + h * b1
                b2 = (f(a_sg, zm, tau + h, s + 1) - zm) / (1 - tau - h)
                v = (f(alpha, zt, tau, s) - zt) / (1 - tau)
                e = (1 - tau) ** 2 * ((v - (b1 + b2) / 2) ** 2).mean()
                boot.append(w * e)
            total = total + w * e
    return total / (b * t), sum(flow) / len(flow), sum(boot) / len(boot)


def test_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(2, 4, 3, 2, generator=g).tanh()
    z0 = torch.randn(2, 4, 3, 2, generator=g)
    # (τ index, step index): flow frames (step 6) and bootstrap frames at several d, τ = 0 included.
    tau_idx = torch.tensor([[0, 32, 48, 63], [0, 16, 58, 60]])
    step_idx = torch.tensor([[0, 1, 2, 6], [6, 2, 5, 4]])
    assert bool((tau_idx % (K_MAX >> step_idx) == 0).all())
    net = LinearStandIn()
    out = shortcut_loss(net, z1, z0, tau_idx, step_idx, k_max=K_MAX)
    alpha = nn.Parameter(torch.tensor(0.6))
    want, want_flow, want_boot = _hand_loss(alpha, net.beta, net.gamma, z1, z0, tau_idx, step_idx)
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.terms["flow"], want_flow.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.terms["bootstrap"], want_boot.detach(), rtol=1e-5, atol=1e-7)
    # gradients flow only through the student pass (the target is stop-gradient)
    out.loss.backward()
    want.backward()
    torch.testing.assert_close(net.alpha.grad, alpha.grad, rtol=1e-5, atol=1e-7)
    assert len(net.calls) == 3  # student + two teacher half steps


def test_objective_shifts_actions_alternates_lengths_and_makes_images():
    net = LinearStandIn()
    obj = ShortcutObjective(
        ShortcutConfig(k_max=K_MAX, short_len=4, long_len=12, independent_frac=0.3)
    )
    b, t = 64, 12
    acts = torch.randint(0, 2, (b, t, 9))
    batch = {
        "latents": torch.randn(b, t, 3, 2),
        "actions": acts,
        "labeled": torch.ones(b, t, dtype=torch.bool),
    }
    assert sequence_length(0, 4, 12) == 4 and sequence_length(1, 4, 12) == 12
    out = obj(net, batch, step=1)
    call = net.calls[0]
    assert call["t"] == 12 and out.metrics["seq_len"] == 12
    ind = call["independent"]
    assert torch.equal(call["actions"][:, 1:], acts[:, :-1])  # slot t carries a_{t-1}
    assert not bool(call["labeled"][:, 0].any())
    assert not bool(call["labeled"][ind].any())  # independent images carry no actions
    assert bool(call["labeled"][~ind][:, 1:].all())
    net.calls.clear()
    out = obj(net, batch, step=0)
    assert net.calls[0]["t"] == 4 and net.calls[0]["actions"].shape[0] == b * 3
    fracs = []
    for s in range(20):
        net.calls.clear()
        fracs.append(obj(net, batch, s).metrics["frac_independent"])
    assert abs(sum(fracs) / len(fracs) - 0.3) < 0.05


def test_shortcut_loss_falls_on_toy_sequences():
    torch.manual_seed(0)
    # plain x-prediction: a preconditioned model starts near the linear optimum (test below)
    cfg = DynamicsConfig.preset("test", n_z=4, d_z=4, context=4, precondition=False)
    model = DynamicsModel(cfg)
    base = torch.randn(1, 1, cfg.n_z, cfg.d_z)

    def batch(b: int, g: torch.Generator) -> dict:
        phase = torch.rand(b, 1, 1, 1, generator=g) * 6.28
        steps = torch.arange(8).float()[None, :, None, None]
        z = torch.sin(2 * base + phase + 0.4 * steps)  # a smooth, predictable latent motion
        return {
            "latents": z,
            "actions": torch.zeros(b, 8, 9, dtype=torch.long),
            "labeled": torch.ones(b, 8, dtype=torch.bool),
        }

    g = torch.Generator().manual_seed(1)
    held = batch(16, g)
    tau_idx, step_idx = sample_levels((16, 8), K_MAX, generator=g)
    z0 = torch.randn(held["latents"].shape, generator=g)

    def held_loss() -> float:
        with torch.no_grad():
            return float(
                shortcut_loss(model, held["latents"], z0, tau_idx, step_idx, k_max=K_MAX).loss
            )

    before = held_loss()
    obj = ShortcutObjective(ShortcutConfig(k_max=K_MAX))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for s in range(80):
        out = obj(model, batch(8, g), s)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    after = held_loss()
    assert after < 0.5 * before, (before, after)


def test_objective_trains_in_the_models_normalised_scale():
    """Same loss for latents z with identity stats and for z·s + m with stats (m, s)."""
    from lol_dreamer.models.dynamics import latent_stats

    cfg = DynamicsConfig.preset("test", n_z=4, d_z=4, context=4)
    torch.manual_seed(0)
    plain = DynamicsModel(cfg)
    scaled = DynamicsModel(cfg)
    scaled.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 6, 4, 4, generator=g)
    mean, std = torch.randn(4, 4, generator=g), torch.rand(4, 4, generator=g) * 0.1 + 0.01
    scaled.set_latent_stats(mean, std)
    obj = ShortcutObjective(ShortcutConfig(k_max=cfg.k_max))
    acts = {
        "actions": torch.zeros(4, 6, 9, dtype=torch.long),
        "labeled": torch.ones(4, 6, dtype=torch.bool),
    }
    torch.manual_seed(3)
    want = obj(plain, {"latents": z, **acts}, step=1).loss
    torch.manual_seed(3)
    got = obj(scaled, {"latents": z * std + mean, **acts}, step=1).loss
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # latent_stats: per-entry moments, the same from a list of episodes as from their concatenation
    eps = [torch.randn(n, 4, 4, generator=g) * std + mean for n in (50, 70, 30)]
    m1, s1 = latent_stats(eps, max_frames=40)
    m2, s2 = latent_stats(torch.cat(eps), max_frames=40)
    torch.testing.assert_close(m1, m2)
    torch.testing.assert_close(s1, s2)
    m3, s3 = latent_stats(eps)
    torch.testing.assert_close(m3, torch.cat(eps).mean(0))
    torch.testing.assert_close(s3, torch.cat(eps).std(0))


def test_preconditioning_starts_at_the_linear_optimum():
    """c_skip·z̃ is the least-squares estimate of unit-variance z1 and c_out its residual std."""
    from lol_dreamer.models.dynamics import precondition_coefficients

    g = torch.Generator().manual_seed(0)
    z1, z0 = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    for tau in (0.0, 0.25, 0.5, 58 / 64, 63 / 64):
        zt = (1 - tau) * z0 + tau * z1
        c_skip, c_out = precondition_coefficients(torch.tensor(tau))
        best = float((zt * z1).mean() / zt.pow(2).mean())  # least-squares slope
        assert abs(float(c_skip) - best) < 0.01
        assert abs(float((c_skip * zt - z1).pow(2).mean()) - float(c_out) ** 2) < 0.01
    # a fresh preconditioned model nearly returns its input at τ → 1, and beats plain x-prediction
    cfg = DynamicsConfig.preset("test", n_z=4, d_z=4, context=4, kalman_skip=False)
    assert cfg.precondition and cfg.latent_scale == 1.0
    torch.manual_seed(0)
    pre = DynamicsModel(cfg)
    plain = DynamicsModel(DynamicsConfig.from_dict({**cfg.to_dict(), "precondition": False}))
    plain.load_state_dict(pre.state_dict())
    z1 = torch.randn(8, 4, 4, 4, generator=g)
    z0 = torch.randn(8, 4, 4, 4, generator=g)
    tau_idx, step_idx = sample_levels((8, 4), K_MAX, generator=g)
    with torch.no_grad():
        hi = torch.full((8, 4), 63)
        x = 63 / 64 * z1 + 1 / 64 * z0
        out = pre(x, hi, step_idx).z1
        assert float((out - z1).pow(2).mean()) < 0.01 * float(z1.pow(2).mean())
        lp = shortcut_loss(pre, z1, z0, tau_idx, step_idx, k_max=K_MAX).loss
        lq = shortcut_loss(plain, z1, z0, tau_idx, step_idx, k_max=K_MAX).loss
    assert float(lp) < 0.7 * float(lq)


def test_the_model_learns_to_read_its_context():
    """Frames that repeat the previous one: after a short training the prediction of a frame from
    pure noise uses the (τ_ctx-noised) context, far better than the same frame without context.
    Unit-variance latents fed as they are and no Kalman skip: the network itself must learn it."""
    torch.manual_seed(0)
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4, kalman_skip=False)
    model = DynamicsModel(cfg)
    obj = ShortcutObjective(ShortcutConfig(k_max=K_MAX, flow_frac=0.5))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    t = 8
    g = torch.Generator().manual_seed(0)

    def clips(b: int) -> torch.Tensor:
        return torch.randn(b, 1, 8, 4, generator=g).expand(b, t, 8, 4).clone()

    for s in range(250):
        z = clips(8)
        batch = {"latents": z, "actions": torch.zeros(8, t, 9, dtype=torch.long)}
        out = obj(model, batch, s)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    z = clips(64)
    tau = torch.full((64, t), cfg.tau_ctx_idx)
    tau[:, -1] = 0
    tf = (tau.float() / K_MAX)[..., None, None]
    zt = (1 - tf) * torch.randn(z.shape, generator=g) + tf * z
    step = torch.full((64, t), cfg.step_idx_min)
    with torch.no_grad():
        with_ctx = float((model(zt, tau, step).z1[:, -1] - z[:, -1]).pow(2).mean())
        alone = float(
            (model(zt[:, -1:], tau[:, -1:], step[:, -1:]).z1[:, 0] - z[:, -1]).pow(2).mean()
        )
    assert alone > 0.8  # one frame of pure noise says nothing about a random frame
    assert with_ctx < 0.5 * alone, (with_ctx, alone)


def test_context_prefix_gives_a_clean_history_before_a_cut():
    g = torch.Generator().manual_seed(0)
    b, t = 2000, 12
    tau_idx, step_idx = sample_levels((b, t), K_MAX, generator=g, flow_frac=0.5)
    eligible = torch.rand(b, generator=g) < 0.8
    tau2, step2 = context_prefix(tau_idx, step_idx, 0.5, K_MAX, eligible=eligible, generator=g)
    ctx, step_min = round(0.9 * K_MAX), int(math.log2(K_MAX))
    at_ctx = (tau2 == ctx) & (step2 == step_min)
    changed = (tau2 != tau_idx) | (step2 != step_idx)
    assert bool(at_ctx[changed].all())  # a changed frame is always (τ_ctx, d_min)
    assert not bool(changed[~eligible].any())  # ineligible sequences untouched
    assert not bool(changed[:, -1].any())  # the last frame is never in the prefix
    picked = torch.zeros(b, dtype=torch.bool)
    for i in range(b):
        if not bool(changed[i].any()):
            continue
        last = int(torch.nonzero(changed[i]).max())
        assert bool(at_ctx[i, : last + 1].all())  # the prefix starts at frame 0, unbroken
        picked[i] = True
    # ≈ frac of the eligible sequences (a cut before a frame already at (τ_ctx, d_min) is unseen)
    frac = float(picked[eligible].float().mean())
    assert 0.42 < frac < 0.55, frac
    same = context_prefix(tau_idx, step_idx, 0.0, K_MAX, generator=g)
    assert same[0] is tau_idx and same[1] is step_idx


def test_context_frac_is_checked_and_applied_by_the_objective():
    import pytest

    with pytest.raises(ValueError, match="context_frac"):
        ShortcutConfig(context_frac=1.5)
    assert ShortcutConfig.from_dict({"k_max": 64}).context_frac == 0.0  # old run configs load
    model = LinearStandIn()
    obj = ShortcutObjective(ShortcutConfig(k_max=K_MAX, independent_frac=0.0, context_frac=1.0))
    torch.manual_seed(0)
    obj(model, {"latents": torch.randn(64, 8, 4, 2)}, step=0)
    first = model.calls[0]  # the student pass
    assert bool((first["tau_idx"][:, 0] == round(0.9 * K_MAX)).all())
    assert bool((first["step_idx"][:, 0] == int(math.log2(K_MAX))).all())
    model.calls.clear()
    obj = ShortcutObjective(ShortcutConfig(k_max=K_MAX, independent_frac=1.0, context_frac=1.0))
    torch.manual_seed(0)
    obj(model, {"latents": torch.randn(64, 8, 4, 2)}, step=0)
    assert not bool((model.calls[0]["tau_idx"][:, 0] == round(0.9 * K_MAX)).all())  # images: none


def test_held_out_eval_reports_how_much_the_actions_help():
    from lol_dreamer.world_model_training import held_out_eval

    torch.manual_seed(0)
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4)
    model = DynamicsModel(cfg).eval()
    obj = ShortcutObjective(ShortcutConfig(k_max=K_MAX, independent_frac=0.0))
    g = torch.Generator().manual_seed(1)
    acts = torch.randint(0, 2, (4, 6, 9), generator=g)
    batch = {"latents": torch.randn(4, 6, 8, 4, generator=g), "actions": acts}
    with torch.no_grad():
        plain = held_out_eval(obj, [batch, batch])(model, 0)
        both = held_out_eval(obj, [batch, batch], shuffled_actions=True)(model, 0)
        same = {**batch, "actions": acts[:1].expand(4, 6, 9).clone()}
        none = held_out_eval(obj, [same], shuffled_actions=True)(model, 0)
    assert {k: both[k] for k in plain} == plain  # the usual numbers are unchanged
    assert both["flow_shuffled"] != both["flow"]  # a random model reads its actions
    assert both["action_gain"] == both["flow_shuffled"] / both["flow"] - 1.0
    assert none["action_gain"] == 0.0  # identical actions in every sequence: nothing to shuffle


def test_the_model_learns_to_follow_its_actions():
    """Frames that move by an action-dependent step: after a short training the held-out flow loss
    is clearly worse when each sequence is given another's actions (``action_gain`` > 0)."""
    from lol_dreamer.world_model_training import held_out_eval

    torch.manual_seed(0)
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4, kalman_skip=False)
    model = DynamicsModel(cfg)
    obj = ShortcutObjective(
        ShortcutConfig(k_max=K_MAX, flow_frac=0.5, independent_frac=0.1, context_frac=0.5)
    )
    probe = ShortcutObjective(
        ShortcutConfig(k_max=K_MAX, flow_frac=0.5, independent_frac=0.0, context_frac=1.0)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    t = 8
    g = torch.Generator().manual_seed(0)
    shift = 0.5 * torch.randn(4, 8, 4, generator=g)  # movement bins 0..3 move the latent this way

    def clips(b: int) -> dict[str, torch.Tensor]:
        a = torch.zeros(b, t, 9, dtype=torch.long)
        a[..., 0] = torch.randint(0, 4, (b, t), generator=g)
        z0 = torch.randn(b, 1, 8, 4, generator=g)
        z = torch.cat((z0, z0 + shift[a[:, :-1, 0]].cumsum(1)), 1)  # actions[t]: frame t → t + 1
        return {"latents": z, "actions": a}

    held = [clips(32)]
    with torch.no_grad():
        before = held_out_eval(probe, held, shuffled_actions=True)(model.eval(), 0)
    model.train()
    for s in range(300):
        out = obj(model, clips(8), s)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        after = held_out_eval(probe, held, shuffled_actions=True)(model.eval(), 0)
    assert after["flow"] < 0.5 * before["flow"], (before, after)
    assert after["action_gain"] > 0.05, after  # a model that ignores its actions scores 0


def test_next_frame_eval_scores_one_step_predictions_against_copying():
    from lol_dreamer.world_model_training import combine_evals, next_frame_eval

    g = torch.Generator().manual_seed(3)
    z = torch.randn(4, 6, 8, 4, generator=g)
    acts = torch.randint(0, 2, (4, 6, 9), generator=g)
    batch = {"latents": z, "actions": acts}

    class Fixed(nn.Module):
        """Ignores its inputs and returns ``out``: an oracle (the truth) or a constant guess."""

        def __init__(self, out: torch.Tensor) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))
            self.out = out
            self.cfg = SimpleNamespace(tau_ctx_idx=58, k_max=K_MAX, step_idx_min=6)

        def forward(self, z_in, tau, step, actions, labeled):
            assert bool((tau[:, :-1] == 58).all()) and bool((tau[:, -1] == 0).all())
            assert bool((step == 6).all())
            return SimpleNamespace(z1=self.out)

    ev = next_frame_eval([batch, batch])
    oracle = ev(Fixed(z), 0)
    copy = float((z[:, -2] - z[:, -1]).pow(2).mean())
    assert oracle["next_frame_mse"] == 0.0 and oracle["next_frame_ratio"] == 0.0
    assert math.isclose(oracle["copy_last_mse"], copy, rel_tol=1e-6)
    zero = ev(Fixed(torch.zeros_like(z)), 0)
    assert math.isclose(zero["next_frame_mse"], float(z[:, -1].pow(2).mean()), rel_tol=1e-6)
    assert zero["next_frame_mse_shuffled"] == zero["next_frame_mse"]  # it ignores its actions
    assert math.isclose(zero["next_frame_ratio"], zero["next_frame_mse"] / copy, rel_tol=1e-6)
    torch.manual_seed(0)
    real = DynamicsModel(DynamicsConfig.preset("test", n_z=8, d_z=4)).eval()
    both = combine_evals(ev, next_frame_eval([batch], prefix="x/"))
    first, again = both(real, 0), both(real, 1)
    assert first == again  # the same context noise at every evaluation
    assert first["next_frame_mse_shuffled"] != first["next_frame_mse"]  # a real model reads actions
    assert {"x/next_frame_ratio", "next_frame_ratio"} <= set(first)


def test_latent_filter_is_the_linear_optimum_over_the_history():
    """The Kalman skip of frame t is the least-squares estimate of x_t from all noisy frames up to t
    under the AR(1) model, its variance the residual; with no earlier frame (or ρ = 0) it is the
    one-frame preconditioning; a filter run in two pieces equals one run."""
    from lol_dreamer.models.dynamics import filter_latents, precondition_coefficients

    g = torch.Generator().manual_seed(1)
    n, t = 200_000, 4
    taus = torch.tensor([58 / 64, 0.25, 58 / 64, 0.0])
    for rho in (0.0, 0.5, 0.97):
        x = [torch.randn(n, generator=g)]
        for _ in range(t - 1):
            x.append(rho * x[-1] + (1 - rho**2) ** 0.5 * torch.randn(n, generator=g))
        xs = torch.stack(x, 1)  # n t
        zt = (1 - taus) * torch.randn(n, t, generator=g) + taus * xs
        mean, var, _ = filter_latents(
            zt[:, :, None, None], taus.expand(n, t), torch.full((1, 1), rho)
        )
        for i in range(t):
            best = torch.linalg.lstsq(zt[:, : i + 1], xs[:, i : i + 1]).solution
            ls = (zt[:, : i + 1] @ best).flatten()
            assert float((mean[:, i, 0, 0] - ls).pow(2).mean()) < 1e-3
            resid = float((mean[:, i, 0, 0] - xs[:, i]).pow(2).mean())
            assert abs(resid - float(var[0, i, 0, 0])) < 0.01
        c_skip, c_out = precondition_coefficients(taus[0])
        torch.testing.assert_close(mean[:, 0, 0, 0], c_skip * zt[:, 0])
        torch.testing.assert_close(var[0, 0, 0, 0], c_out.square())
        if rho == 0.0:
            c_skip, c_out = precondition_coefficients(taus)
            torch.testing.assert_close(mean[..., 0, 0], c_skip * zt)
        _, _, st = filter_latents(
            zt[:, :2, None, None], taus[:2].expand(n, 2), torch.full((1, 1), rho)
        )
        m2, v2, _ = filter_latents(
            zt[:, 2:, None, None], taus[2:].expand(n, 2), torch.full((1, 1), rho), state=st
        )
        torch.testing.assert_close(m2, mean[:, 2:])
        torch.testing.assert_close(v2, var[:, 2:])


def test_latent_rho_recovers_the_frame_to_frame_correlation():
    from lol_dreamer.models.dynamics import latent_rho

    g = torch.Generator().manual_seed(2)
    rho = torch.tensor([[0.0, 0.5], [0.9, 0.99]])
    eps = []
    for length in (3000, 2000):
        z = [torch.randn(2, 2, generator=g)]
        for _ in range(length - 1):
            z.append(rho * z[-1] + (1 - rho**2).sqrt() * torch.randn(2, 2, generator=g))
        eps.append(torch.stack(z) * 3.0 + 1.0)  # any scale: rho is measured after normalising
    mean, std = torch.full((2, 2), 1.0), torch.full((2, 2), 3.0)
    torch.testing.assert_close(latent_rho(eps, mean, std), rho, atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="consecutive"):
        latent_rho([torch.zeros(1, 2, 2)], mean, std)


def test_kalman_skip_model_starts_at_the_filtered_estimate():
    """With its output layer zeroed, a kalman_skip model returns exactly the filtered estimate:
    each frame continues the filter from the frame before it, a gap in positions or an independent
    sequence starts afresh, a given ``filter_state`` feeds the first frame, and the output carries
    the state after the last frame."""
    from lol_dreamer.models.dynamics import filter_latents

    kw = dict(n_z=4, d_z=4, context=4, kalman_skip=True, latent_scale=1.0)
    assert DynamicsModel(DynamicsConfig.preset("test", **kw)).z_out.weight.abs().sum() > 0
    cfg = DynamicsConfig.preset("test", zero_init_out=True, **kw)  # the output layer starts at 0
    model = DynamicsModel(cfg).eval()
    rho = torch.rand(4, 4) * 0.99
    model.set_latent_stats(torch.zeros(4, 4), torch.ones(4, 4), rho)
    torch.testing.assert_close(model.latent_rho, rho)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 4, 4, 4, generator=g)
    tau = torch.tensor([[58, 58, 20, 0], [10, 40, 58, 0]])
    tf = tau.float() / 64
    step = torch.full((2, 4), cfg.step_idx_min)
    pos = torch.tensor([[0, 1, 2, 3], [0, 1, 5, 6]])  # sequence 1 has a gap before frame 2
    with torch.no_grad():
        out = model(z, tau, step, positions=pos)
        ind = model(z, tau, step, positions=pos, independent=torch.tensor([True, False])).z1
    m0, _, st0 = filter_latents(z[:1], tf[:1], rho)
    torch.testing.assert_close(out.z1[:1], m0)
    m1a, _, _ = filter_latents(z[1:, :2], tf[1:, :2], rho)
    m1b, _, st1 = filter_latents(z[1:, 2:], tf[1:, 2:], rho)  # the gap: a fresh filter
    torch.testing.assert_close(out.z1[1:], torch.cat((m1a, m1b), 1))
    torch.testing.assert_close(out.filter_state[0], torch.cat((st0[0], st1[0])))
    torch.testing.assert_close(out.filter_state[1], torch.cat((st0[1], st1[1])))
    mi, _, _ = filter_latents(z[:1], tf[:1], rho, reset=torch.ones(1, 4, dtype=torch.bool))
    torch.testing.assert_close(ind[:1], mi)
    torch.testing.assert_close(ind[1:], out.z1[1:])
    # continuing from a state = running the filter over the longer sequence
    with torch.no_grad():
        later = model(
            z[:, 2:],
            tau[:, 2:],
            step[:, 2:],
            positions=pos[:, 2:],
            filter_state=model(z[:, :2], tau[:, :2], step[:, :2]).filter_state,
        ).z1
    torch.testing.assert_close(later[:1], out.z1[:1, 2:])
    # a rho of 0 is the one-frame preconditioned model
    plain = DynamicsModel(DynamicsConfig.from_dict({**cfg.to_dict(), "kalman_skip": False}))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "latent_rho"})
    model.set_latent_stats(torch.zeros(4, 4), torch.ones(4, 4), torch.zeros(4, 4))
    with torch.no_grad():
        torch.testing.assert_close(model(z, tau, step).z1, plain(z, tau, step).z1)
    with pytest.raises(ValueError, match="precondition"):
        DynamicsConfig.preset("test", n_z=4, d_z=4, precondition=False, kalman_skip=True)


def test_latent_scale_keeps_the_skip_at_the_linear_optimum():
    """``latent_scale`` σ: latents of std σ; the preconditioning and the latent filter use it, so a
    fresh model still starts at the least-squares estimate, and normalising round-trips."""
    from lol_dreamer.models.dynamics import filter_latents, precondition_coefficients

    g = torch.Generator().manual_seed(4)
    sigma, n = 3.0, 200_000
    z1, z0 = sigma * torch.randn(n, generator=g), torch.randn(n, generator=g)
    for tau in (0.0, 0.25, 58 / 64):
        zt = (1 - tau) * z0 + tau * z1
        c_skip, c_out = precondition_coefficients(torch.tensor(tau), sigma)
        assert abs(float(c_skip) - float((zt * z1).mean() / zt.pow(2).mean())) < 0.01 * sigma
        resid = float((c_skip * zt - z1).pow(2).mean())
        assert abs(resid - float(c_out) ** 2) < 0.02 * max(resid, 1.0)
        m, v, _ = filter_latents(
            zt[:, None, None, None], torch.full((n, 1), tau), torch.full((1, 1), 0.9), var0=sigma**2
        )
        torch.testing.assert_close(m.flatten(), c_skip * zt)
        torch.testing.assert_close(v[0].flatten(), c_out.square().reshape(1))
    cfg = DynamicsConfig.preset("test", n_z=4, d_z=4, latent_scale=sigma, kalman_skip=True)
    model = DynamicsModel(cfg)
    model.set_latent_stats(torch.randn(4, 4), torch.rand(4, 4) + 0.5, torch.rand(4, 4))
    z = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(model.denormalize_latents(model.normalize_latents(z)), z)
    x = (z - model.latent_mean) / model.latent_std
    torch.testing.assert_close(model.normalize_latents(z), sigma * x)
    with pytest.raises(ValueError, match="latent_scale"):
        DynamicsConfig.preset("test", n_z=4, d_z=4, latent_scale=0.0)
