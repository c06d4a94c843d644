"""Dynamics transformer: causality, windowing, agent isolation, action embedding, configs."""

from __future__ import annotations

import pytest
import torch

from lol_dreamer.models.dynamics import (
    DynamicsConfig,
    DynamicsModel,
    build_dynamics,
    shift_actions,
)


def _inputs(cfg: DynamicsConfig, b: int = 2, t: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, t, cfg.n_z, cfg.d_z, generator=g)
    tau = torch.randint(0, cfg.k_max, (b, t), generator=g)
    step = torch.randint(0, cfg.n_step_levels, (b, t), generator=g)
    acts = torch.cat(
        (torch.randint(0, 19, (b, t, 1), generator=g), torch.randint(0, 2, (b, t, 8), generator=g)),
        -1,
    )
    lab = torch.ones(b, t, dtype=torch.bool)
    return z, tau, step, acts, lab


def test_output_shapes_and_config_roundtrip():
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4, n_agent=2)
    m = DynamicsModel(cfg)
    out = m(*_inputs(cfg), task=torch.tensor([0, 2]))
    assert out.z1.shape == (2, 6, 8, 4)
    assert out.agent is not None and out.agent.shape == (2, 6, 2, cfg.dim)
    assert out.hidden.shape == (2, 6, cfg.tokens_per_frame, cfg.dim)
    assert DynamicsConfig.from_dict(cfg.to_dict()) == cfg
    m2 = build_dynamics(cfg.to_dict())
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2(*_inputs(cfg), task=torch.tensor([0, 2])).z1, out.z1)
    with pytest.raises(ValueError, match="unknown DynamicsConfig keys"):
        DynamicsConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="latents must be"):
        m(
            torch.zeros(1, 2, 3, 4),
            torch.zeros(1, 2, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
        )


@pytest.mark.parametrize(
    ("name", "target"), [("tiny", 5e6), ("small", 39e6), ("medium", 129e6), ("large", 306e6)]
)
def test_preset_sizes_near_reference(name, target):
    cfg = DynamicsConfig.preset(name, n_z=64, d_z=16)
    with torch.device("meta"):
        n = DynamicsModel(cfg).num_params()
    assert 0.85 * target < n < 1.2 * target


def test_time_layers_every_fourth():
    cfg = DynamicsConfig.preset("nano", n_z=32, d_z=32)
    assert cfg.time_layers == (3, 7)
    assert cfg.tau_ctx_idx == 58 and cfg.step_idx_min == 6


def test_time_causality():
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4)
    m = DynamicsModel(cfg).eval()
    z, tau, step, acts, lab = _inputs(cfg)
    out = m(z, tau, step, acts, lab).z1
    t = 3
    z2, tau2, step2, acts2 = z.clone(), tau.clone(), step.clone(), acts.clone()
    z2[:, t + 1 :] += 5.0
    tau2[:, t + 1 :] = (tau2[:, t + 1 :] + 7) % cfg.k_max
    step2[:, t + 1 :] = (step2[:, t + 1 :] + 1) % cfg.n_step_levels
    acts2[:, t + 1 :, 1:] = 1 - acts2[:, t + 1 :, 1:]
    out2 = m(z2, tau2, step2, acts2, lab).z1
    assert torch.equal(out[:, : t + 1], out2[:, : t + 1])
    assert not torch.allclose(out[:, t + 1 :], out2[:, t + 1 :])


def test_time_window_bounds_receptive_field():
    # Two time layers with a window of 2 frames: frame 0 can reach frames 1 and 2, never frame 3+.
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4, context=2)
    assert len(cfg.time_layers) == 2
    m = DynamicsModel(cfg).eval()
    z, tau, step, acts, lab = _inputs(cfg, t=6)
    out = m(z, tau, step, acts, lab).z1
    z2 = z.clone()
    z2[:, 0] += 3.0
    out2 = m(z2, tau, step, acts, lab).z1
    assert not torch.allclose(out[:, 2], out2[:, 2])
    assert torch.equal(out[:, 3:], out2[:, 3:])


def test_independent_sequences_have_no_time_attention():
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4)
    m = DynamicsModel(cfg).eval()
    z, tau, step, acts, lab = _inputs(cfg)
    ind = torch.tensor([True, False])
    out = m(z, tau, step, acts, lab, independent=ind).z1
    z2 = z.clone()
    z2[:, 0] += 3.0
    out2 = m(z2, tau, step, acts, lab, independent=ind).z1
    assert torch.equal(out[0, 1:], out2[0, 1:])  # independent: other frames untouched
    assert not torch.allclose(out[1, 1:], out2[1, 1:])  # ordinary sequence: later frames react
    # An independent frame equals the same frame run alone.
    alone = m(z[:1, 2:3], tau[:1, 2:3], step[:1, 2:3], acts[:1, 2:3], lab[:1, 2:3]).z1
    torch.testing.assert_close(out[0, 2:3], alone[0], atol=1e-5, rtol=1e-5)


def test_nothing_attends_to_agent_tokens():
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4, n_agent=2)
    m = DynamicsModel(cfg).eval()
    inputs = _inputs(cfg)
    out = m(*inputs, task=torch.tensor([0, 1]))
    out_task = m(*inputs, task=torch.tensor([2, 2]))
    with torch.no_grad():
        m.agent_tokens.add_(torch.randn_like(m.agent_tokens))
    out_tok = m(*inputs, task=torch.tensor([0, 1]))
    assert torch.equal(out.z1, out_task.z1) and torch.equal(out.z1, out_tok.z1)
    assert not torch.allclose(out.agent, out_task.agent)  # agent tokens do read the task
    # and read the frame: changing the latents changes the agent features
    z2 = inputs[0] + 1.0
    out_z = m(z2, *inputs[1:], task=torch.tensor([0, 1]))
    assert not torch.allclose(out_z.agent, out_tok.agent)


def test_action_embedding_ignores_unlabeled_actions():
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4)
    m = DynamicsModel(cfg).eval()
    z, tau, step, acts, _ = _inputs(cfg)
    unl = torch.zeros(2, 6, dtype=torch.bool)
    other = acts.clone()
    other[..., 0] = (other[..., 0] + 5) % 19
    other[..., 1:] = 1 - other[..., 1:]
    assert torch.equal(m(z, tau, step, acts, unl).z1, m(z, tau, step, other, unl).z1)
    assert torch.equal(m(z, tau, step, acts, unl).z1, m(z, tau, step, None, None).z1)
    lab = torch.ones(2, 6, dtype=torch.bool)
    assert not torch.allclose(m(z, tau, step, acts, lab).z1, m(z, tau, step, other, lab).z1)
    emb = m.action_emb(acts, unl)
    assert torch.equal(emb, m.action_emb.base.expand_as(emb))


def test_shift_actions():
    acts = torch.arange(3 * 9).view(1, 3, 9)
    lab = torch.tensor([[True, False, True]])
    a, lb = shift_actions(acts, lab)
    assert torch.equal(a[0, 1:], acts[0, :2]) and torch.equal(
        a[0, 0], torch.zeros(9, dtype=a.dtype)
    )
    assert lb.tolist() == [[False, True, False]]


def test_grad_checkpointing_gives_the_same_gradients():
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4)
    m = DynamicsModel(cfg)
    inputs = _inputs(cfg)
    grads = []
    for enabled in (False, True):
        m.zero_grad()
        m.set_grad_checkpointing(enabled)
        m(*inputs).z1.square().mean().backward()
        grads.append([p.grad.clone() for p in m.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_reuse_across_denoising_passes_keeps_outputs_exact():
    """The K passes of a frame may share the time mask, time RoPE and action tokens via ``reuse``."""
    from lol_dreamer.kv_cache import KVCache

    torch.manual_seed(0)
    cfg = DynamicsConfig.preset("test", n_z=8, d_z=4, n_agent=1, context=6)
    model = DynamicsModel(cfg).eval()
    b = 2
    cache = KVCache(b, cfg.tokens_per_frame, cfg.context - 1)
    acts = torch.randint(0, 2, (b, 3, 9))
    acts[..., 0] = torch.randint(0, 19, (b, 3))
    lab = torch.ones(b, 3, dtype=torch.bool)
    task = torch.tensor([0, 2])
    with torch.no_grad():
        model(
            torch.randn(b, 3, 8, 4),
            torch.full((b, 3), cfg.tau_ctx_idx),
            torch.full((b, 3), cfg.step_idx_min),
            acts,
            lab,
            task,
            cache=cache,
            positions=torch.arange(3).expand(b, 3),
        )
        reuse: dict = {}
        view = cache.read_only()
        pos = torch.full((b, 1), 3)
        for tau_idx in (0, 16, 32, 48):
            x = torch.randn(b, 1, 8, 4)
            tau, step = torch.full((b, 1), tau_idx), torch.full((b, 1), 2)
            args = (x, tau, step, acts[:, :1], lab[:, :1], task)
            fast = model(*args, cache=view, positions=pos, reuse=reuse)
            plain = model(*args, cache=view, positions=pos)
            assert torch.equal(fast.z1, plain.z1) and torch.equal(fast.agent, plain.agent)
    assert {"cond", "time_rope", "time_mask"} <= set(reuse)
