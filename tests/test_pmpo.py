import pytest
import torch
from tensordict import TensorDict

from lol_dreamer.agents.pmpo import PMPOLoss, frozen_prior
from lol_dreamer.agents.returns import td_lambda_returns
from lol_dreamer.models.heads import AgentHeads, HeadsConfig
from lol_dreamer.policy import Policy


def _heads(seed=0):
    torch.manual_seed(seed)
    heads = AgentHeads(HeadsConfig.preset("test"))
    heads.add_value_head()
    with torch.no_grad():
        for p in (heads.policy.out.weight, heads.value.out.weight):
            p.normal_(0, 0.3)
    return heads


def _rollout(b, H, dim, reward_shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, H + 1, dim, generator=g)
    term = torch.zeros(b, H, dtype=torch.bool)
    term[0, 1] = True
    done = term.clone()
    done[1, 2] = True  # a reset without termination (truncation)
    return TensorDict(
        {
            "agent_features": feats[:, :-1],
            "action": torch.cat(
                (
                    torch.randint(0, 19, (b, H, 1), generator=g),
                    torch.randint(0, 2, (b, H, 8), generator=g),
                ),
                -1,
            ),
            "next": {
                "agent_features": feats[:, 1:],
                "reward": torch.randn(b, H, 1, generator=g) + reward_shift,
                "terminated": term[..., None],
                "done": done[..., None],
            },
        },
        batch_size=[b, H],
    )


def _hand(heads, prior, td, alpha=0.5, beta=0.3, gamma=0.997, lmbda=0.95):
    with torch.no_grad():
        f, nf = td["agent_features"], td["next", "agent_features"]
        v = heads.value.predict(f)
        vn = heads.value.predict(nf)
        c = 1.0 - td["next", "terminated"][..., 0].float()
        ret = td_lambda_returns(
            td["next", "reward"][..., 0],
            c,
            torch.cat((v[:, :1], vn), 1),
            gamma,
            lmbda,
            dones=td["next", "done"][..., 0],
        )
        adv = (ret - v).flatten()
        logp = heads.policy(f, 0).log_prob(td["action"]).flatten()
        kl = heads.policy(f, 0).kl(prior(f, 0)).flatten()
        pos, neg = adv >= 0, adv < 0
        total = 0.0
        if neg.any():
            total += (1 - alpha) * logp[neg].sum() / neg.sum()
        if pos.any():
            total -= alpha * logp[pos].sum() / pos.sum()
        value_ce = (
            -(heads.value.twohot.encode(ret) * torch.log_softmax(heads.value(f), -1)).sum(-1).mean()
        )
    return torch.as_tensor(total), beta * kl.mean(), value_ce, pos.float().mean()


@pytest.mark.parametrize("shift", [0.0, 100.0, -100.0])
def test_pmpo_equals_hand_computation(shift):
    heads = _heads()
    prior = frozen_prior(_heads(seed=1).policy)
    loss = PMPOLoss(heads, prior=prior)
    td = _rollout(3, 5, heads.config.dim, reward_shift=shift)
    out = loss(td)
    pol, kl, val, frac = _hand(heads, prior, td)
    assert torch.allclose(out["loss_policy"], pol, atol=1e-5)
    assert torch.allclose(out["loss_kl"], kl, atol=1e-6)
    assert torch.allclose(out["loss_value"], val, atol=1e-5)
    assert torch.allclose(out["frac_pos"], frac)
    if shift > 0:
        assert out["frac_pos"] == 1.0  # D− empty: contributes 0
    elif shift < 0:
        assert out["frac_pos"] == 0.0  # D+ empty: contributes 0
    else:
        assert 0 < out["frac_pos"] < 1


def test_default_prior_is_a_frozen_copy_with_zero_kl_and_only_heads_train():
    heads = _heads()
    loss = PMPOLoss(heads)
    td = _rollout(2, 4, heads.config.dim)
    out = loss(td)
    assert out["kl"] == 0 and out["loss_kl"] == 0
    total = out["loss_policy"] + out["loss_kl"] + out["loss_value"]
    total.backward()
    assert all(p.grad is None for p in loss.prior.parameters())
    assert all(p.grad is None for p in heads.reward.parameters())
    assert heads.policy.out.weight.grad.abs().sum() > 0
    trainable = {id(p) for p in loss.trainable_parameters()}
    assert trainable == {id(p) for p in [*heads.policy.parameters(), *heads.value.parameters()]}


def test_untrained_prior_is_refused():
    heads = AgentHeads(HeadsConfig.preset("test"))
    with pytest.raises(ValueError, match="untrained"):
        PMPOLoss(heads)
    PMPOLoss(heads, allow_untrained_prior=True)


def test_pmpo_uses_the_requested_mtp_distance():
    heads = _heads()
    with torch.no_grad():
        heads.policy.out.weight[1].normal_(0, 1.0)
    td = _rollout(2, 4, heads.config.dim)
    prior = frozen_prior(heads.policy)
    with torch.no_grad():
        heads.policy.out.weight[0].add_(0.5)  # only distance 0 moves away from the prior
    assert PMPOLoss(heads, prior=prior, mtp_distance=1)(td)["kl"] == 0
    assert PMPOLoss(heads, prior=prior, mtp_distance=0)(td)["kl"] > 0


def test_pmpo_improves_a_bandit():
    """Reward 1 for moving right (bin 0): PMPO raises its probability, staying near the prior."""
    heads = _heads()
    loss = PMPOLoss(heads)
    opt = torch.optim.Adam(loss.trainable_parameters(), lr=1e-2)
    b, H, d = 64, 4, heads.config.dim
    feats = torch.randn(1, 1, d).expand(b, H + 1, d)

    def p_right():
        return torch.softmax(heads.policy(feats[0, 0], 0).move_logits, -1)[0].item()

    start = p_right()
    actor = Policy(heads, seed=0).as_torchrl_actor()  # composite ("action", "move"/"keys")
    for _ in range(60):
        td = TensorDict({"agent_features": feats[:, :-1]}, batch_size=[b, H])
        with torch.no_grad():
            actor(td)
        td["next"] = TensorDict(
            {
                "agent_features": feats[:, 1:],
                "reward": (td["action", "move"] == 0).float(),
                "continue": torch.ones(b, H),
            },
            batch_size=[b, H],
        )
        out = loss(td)
        opt.zero_grad()
        (out["loss_policy"] + out["loss_kl"] + out["loss_value"]).backward()
        opt.step()
    assert p_right() > start + 0.2
    assert out["kl"] > 0
