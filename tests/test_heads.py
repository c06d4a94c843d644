import itertools
import math

import pytest
import torch

from lol_dreamer.models.heads import (
    ActionDist,
    AgentHeads,
    HeadsConfig,
    mtp_targets,
    to_slots,
    transition_mtp_targets,
    uniform_action_logprob,
)
from lol_dreamer.objectives.agent_loss import agent_head_loss, select_task_reward


def _all_actions() -> torch.Tensor:
    keys = torch.tensor(list(itertools.product((0, 1), repeat=8)))
    move = torch.arange(19).repeat_interleave(len(keys))
    return torch.cat((move[:, None], keys.repeat(19, 1)), dim=1)  # [19 * 256, 9]


def _random_dist(*batch: int) -> ActionDist:
    return ActionDist(torch.randn(*batch, 19) * 2, torch.randn(*batch, 8) * 2)


def test_zero_initialised_heads_are_uniform():
    cfg = HeadsConfig.preset("test")
    heads = AgentHeads(cfg)
    h = torch.randn(3, 4, cfg.dim)
    for n in range(cfg.mtp + 1):
        out = heads(h, n)
        a = out.policy.sample()
        assert torch.allclose(out.policy.log_prob(a), torch.full((3, 4), uniform_action_logprob()))
        assert torch.allclose(
            out.policy.entropy(), torch.full((3, 4), math.log(19) + 8 * math.log(2))
        )
        assert torch.allclose(heads.reward.predict(h, n), torch.zeros(3, 4), atol=1e-4)
        assert torch.allclose(heads.cont.prob(h, n), torch.full((3, 4), 0.5))
    heads.add_value_head()
    assert torch.allclose(heads.value.predict(h), torch.zeros(3, 4), atol=1e-4)
    assert heads(h, None).policy.batch_shape == (3, 4, cfg.mtp + 1)


def test_log_prob_entropy_and_kl_are_exact():
    p, q = _random_dist(2), _random_dist(2)
    acts = _all_actions()[:, None, :]  # [A, 1, 9] broadcast over batch 2
    lp, lq = p.log_prob(acts), q.log_prob(acts)  # [A, 2]
    assert torch.allclose(lp.exp().sum(0), torch.ones(2), atol=1e-5)
    assert torch.allclose(p.entropy(), -(lp.exp() * lp).sum(0), atol=1e-4)
    assert torch.allclose(p.kl(q), (lp.exp() * (lp - lq)).sum(0), atol=1e-4)
    assert (p.kl(q) > 0).all()


def test_sample_is_reproducible_and_matches_probabilities():
    d = ActionDist(
        torch.tensor([[3.0] + [0.0] * 18]), torch.tensor([[4.0, -4.0, 0, 0, 0, 0, 0, 0]])
    )
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(d.sample(g1), d.sample(g2))
    many = ActionDist(d.move_logits.expand(20000, 19), d.key_logits.expand(20000, 8)).sample(g1)
    p_move0 = math.exp(3) / (math.exp(3) + 18)
    assert abs((many[:, 0] == 0).float().mean().item() - p_move0) < 0.02
    assert abs(many[:, 1].float().mean().item() - torch.sigmoid(torch.tensor(4.0)).item()) < 0.01
    assert torch.equal(d.mode(), torch.tensor([[0, 1, 0, 0, 0, 0, 0, 0, 0]]))


def test_kl_to_exact_copy_is_zero_then_positive_after_a_step():
    from lol_dreamer.agents.pmpo import frozen_prior

    cfg = HeadsConfig.preset("test")
    heads = AgentHeads(cfg)
    with torch.no_grad():  # a "trained" policy: non-zero output layer
        heads.policy.out.weight.normal_(0, 0.5)
    prior = frozen_prior(heads.policy)
    h = torch.randn(16, cfg.dim)
    for n in range(cfg.mtp + 1):
        assert torch.equal(heads.policy(h, n).kl(prior(h, n)), torch.zeros(16))
    opt = torch.optim.SGD(heads.policy.parameters(), lr=0.5)
    a = heads.policy(h, 0).sample(torch.Generator().manual_seed(0))
    (-heads.policy(h, 0).log_prob(a).mean()).backward()
    opt.step()
    kl = heads.policy(h, 0).kl(prior(h, 0))
    assert (kl > 0).all()
    assert all(not p.requires_grad for p in prior.parameters())


def test_mtp_targets_exact():
    x = torch.arange(2 * 5).reshape(2, 5) + 1
    valid = torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    tgt, ok = mtp_targets(x, 2, valid)
    assert tgt.shape == (2, 5, 3) and ok.shape == (2, 5, 3)
    for b in range(2):
        for t in range(5):
            for n in range(3):
                if t + n < 5:
                    assert tgt[b, t, n] == x[b, t + n]
                    assert ok[b, t, n] == valid[b, t + n]
                else:
                    assert tgt[b, t, n] == 0 and not ok[b, t, n]
    tgt9, _ = mtp_targets(torch.randint(0, 2, (2, 5, 9)), 2)
    assert tgt9.shape == (2, 5, 3, 9)


def test_transition_targets_are_shifted_into_slots_exactly():
    """Reward / continue targets: slot t, distance n → x[t + n − 1]; index < 0 or ≥ T masked."""
    x = (torch.arange(2 * 5).reshape(2, 5) + 1).float()
    valid = torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    tgt, ok = transition_mtp_targets(x, 2, valid)
    assert tgt.shape == (2, 5, 3) and ok.shape == (2, 5, 3)
    for b in range(2):
        for t in range(5):
            for n in range(3):
                i = t + n - 1
                if 0 <= i < 5:
                    assert tgt[b, t, n] == x[b, i]
                    assert ok[b, t, n] == valid[b, i]
                else:
                    assert tgt[b, t, n] == 0 and not ok[b, t, n]
    assert not ok[:, 0, 0].any()  # slot 0 at distance 0: no transition led into it
    assert ok[1, 4, 1] and tgt[1, 4, 1] == x[1, 4]  # the last transition, from the last slot
    xs, vs = to_slots(x, valid)
    assert torch.equal(xs[:, 1:], x) and (xs[:, 0] == 0).all()
    assert torch.equal(vs[:, 1:], valid) and not vs[:, 0].any()
    ys, _ = to_slots(torch.ones(2, 5, 3))
    assert ys.shape == (2, 6, 3)


def test_untrained_head_loss_values():
    cfg = HeadsConfig.preset("test")
    heads = AgentHeads(cfg)
    b, t = 2, 6
    terms = agent_head_loss(
        heads,
        torch.randn(b, t, cfg.dim),
        torch.randint(0, 2, (b, t, 9)),
        torch.randn(b, t),
        torch.zeros(b, t, dtype=torch.bool),
    )
    n = cfg.mtp + 1
    assert torch.allclose(terms["bc"], torch.tensor(-n * uniform_action_logprob()))
    assert torch.allclose(terms["reward"], torch.tensor(n * math.log(255)), atol=1e-4)
    assert torch.allclose(terms["continue"], torch.tensor(n * math.log(2)))


def test_select_task_reward():
    r = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    out = select_task_reward(r, torch.tensor([2, 0]))
    assert torch.equal(out, torch.stack((r[0, :, 2], r[1, :, 0])))


@pytest.mark.parametrize("L", [2])
def test_mtp_heads_learn_their_alignment(L):
    """Features are a one-hot of t; after training, at slot t and distance n the policy outputs
    actions[t + n] and the reward / continue heads output rewards[t + n − 1] and
    not terminated[t + n − 1] (the transition into frame t + n)."""
    torch.manual_seed(0)
    T = 7
    cfg = HeadsConfig(dim=T, hidden=32, layers=1, mtp=L)
    heads = AgentHeads(cfg)
    h = torch.eye(T)[None]  # [1, T, T]
    moves = torch.tensor([[3, 11, 18, 0, 7, 5, 14]])
    keys = torch.zeros(1, T, 8, dtype=torch.long)
    keys[0, torch.arange(T), torch.arange(T) % 8] = 1
    actions = torch.cat((moves[..., None], keys), dim=-1)
    rewards = torch.tensor([[0.0, 1.0, 5.0, -2.0, 0.5, 10.0, -7.0]])
    terminated = torch.zeros(1, T, dtype=torch.bool)
    terminated[0, 2] = True  # reachable at distance 0 (slot 3)
    terminated[0, -1] = True  # the last transition: only at distances ≥ 1
    opt = torch.optim.Adam(heads.parameters(), lr=3e-2)
    first = None
    for _ in range(300):
        terms = agent_head_loss(heads, h, actions, rewards, terminated)
        loss = terms["bc"] + terms["reward"] + terms["continue"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    checked = 0
    with torch.no_grad():
        for n in range(L + 1):
            mode = heads.policy(h, n).mode()[0]
            r = heads.reward.predict(h, n)[0]
            c = heads.cont.prob(h, n)[0]
            for t in range(T - n):
                assert torch.equal(mode[t], actions[0, t + n]), (n, t)
            for t in range(T):
                i = t + n - 1
                if not 0 <= i < T:
                    continue
                want = rewards[0, i].item()
                assert abs(r[t].item() - want) < 0.1 * (1 + abs(want)), (n, t)
                assert (c[t] < 0.5) == bool(terminated[0, i]), (n, t)
                checked += 1
        # the old (one-step-late) alignment is distinguishable: distance 0 at slot 3 says the
        # transition into frame 3 (rewards[2] = 5, terminal) happened, not rewards[3] = −2
        assert abs(heads.reward.predict(h, 0)[0, 3].item() - 5.0) < 0.5
        assert heads.cont.prob(h, 0)[0, 3] < 0.5 and heads.cont.prob(h, 0)[0, 4] > 0.5
        assert heads.cont.prob(h, 1)[0, T - 1] < 0.5  # the final terminal, one step ahead
    # every (t, n) but slot 0 at n = 0 and the L(L − 1)/2 pairs with t + n − 1 ≥ T
    assert checked == T * (L + 1) - 1 - L * (L - 1) // 2


def test_slot0_distance0_reward_and_continue_are_masked():
    """The invalid target (slot 0, n = 0) gets no gradient; every other valid target does."""
    cfg = HeadsConfig.preset("test")
    heads = AgentHeads(cfg)
    with torch.no_grad():
        for p in heads.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    b, T = 2, 5
    h = torch.randn(b, T, cfg.dim, requires_grad=True)
    rewards, terminated = torch.randn(b, T), torch.rand(b, T) < 0.3
    grads = {}

    def keep(name):
        def hook(_module, _inputs, out):
            out.retain_grad()
            grads[name] = out

        return hook

    hooks = [heads.reward.out.register_forward_hook(keep("reward")),
             heads.cont.out.register_forward_hook(keep("cont"))]  # fmt: skip
    terms = agent_head_loss(heads, h, torch.randint(0, 2, (b, T, 9)), rewards, terminated)
    (terms["reward"] + terms["continue"]).backward()
    for hk in hooks:
        hk.remove()
    for name in ("reward", "cont"):
        g = grads[name].grad.abs().flatten(3).sum(-1)  # [b, T, l]
        assert (g[:, 0, 0] == 0).all(), name
        for t in range(T):
            for n in range(cfg.mtp + 1):
                if 0 <= t + n - 1 < T and (t, n) != (0, 0):
                    assert (g[:, t, n] > 0).all(), (name, t, n)
                else:
                    assert (g[:, t, n] == 0).all(), (name, t, n)
