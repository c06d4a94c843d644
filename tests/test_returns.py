import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.objectives.value import TDLambdaEstimator

from lol_dreamer.agents.returns import GAMMA, LAMBDA, td_lambda_returns


def _hand(rewards, conts, values, gamma, lmbda):
    b, H = rewards.shape
    out = torch.zeros(b, H, dtype=torch.float64)
    for i in range(b):
        nxt = values[i, H].item()
        for t in reversed(range(H)):
            nxt = rewards[i, t].item() + gamma * conts[i, t].item() * (
                (1 - lmbda) * values[i, t + 1].item() + lmbda * nxt
            )
            out[i, t] = nxt
    return out


def test_matches_hand_recursion_with_soft_continues():
    g = torch.Generator().manual_seed(1)
    r, v = torch.randn(3, 9, generator=g), torch.randn(3, 10, generator=g)
    c = torch.rand(3, 9, generator=g)
    got = td_lambda_returns(r, c, v)
    assert torch.allclose(got.double(), _hand(r, c, v, GAMMA, LAMBDA), atol=1e-5)
    # λ = 0 is one-step TD; λ = 1 with c = 1 is the discounted Monte-Carlo return + bootstrap
    one = torch.ones(3, 9)
    assert torch.allclose(td_lambda_returns(r, c, v, 0.9, 0.0), r + 0.9 * c * v[:, 1:])
    mc = td_lambda_returns(r, one, v, 0.9, 1.0)
    disc = 0.9 ** torch.arange(9.0)
    assert torch.allclose(mc[:, 0], (r * disc).sum(1) + 0.9**9 * v[:, 9], atol=1e-5)


@pytest.mark.parametrize(
    ("terminate_mid", "truncate_mid"), [(False, False), (True, False), (True, True)]
)
def test_equals_torchrl_td_lambda_estimator(terminate_mid, truncate_mid):
    g = torch.Generator().manual_seed(0)
    b, H, d = 4, 12, 5
    obs = torch.randn(b, H + 1, d, generator=g)  # s_0 .. s_H
    reward = torch.randn(b, H, generator=g)
    terminated = torch.zeros(b, H, dtype=torch.bool)
    if terminate_mid:
        terminated[0, 3] = True
        terminated[1, 0] = True
        terminated[2, H - 1] = True
        terminated[3, 5] = terminated[3, 9] = True
    value_net = torch.nn.Linear(d, 1)
    done = terminated.clone()
    done[:, -1] = True  # the rollout ends at the horizon (truncation unless terminated)
    if truncate_mid:  # a collector reset mid-rollout without termination
        done[0, 7] = done[2, 4] = True
    td = TensorDict(
        {
            "observation": obs[:, :-1],
            "next": {
                "observation": obs[:, 1:],
                "reward": reward[..., None],
                "done": done[..., None],
                "terminated": terminated[..., None],
            },
        },
        batch_size=[b, H],
    )
    est = TDLambdaEstimator(
        gamma=GAMMA,
        lmbda=LAMBDA,
        value_network=TensorDictModule(
            value_net, in_keys=["observation"], out_keys=["state_value"]
        ),
    )
    with torch.no_grad():
        est(td)
        values = value_net(obs)[..., 0]  # [b, H + 1]
    ours = td_lambda_returns(reward, 1.0 - terminated.float(), values, dones=done)
    assert torch.allclose(ours, td["value_target"][..., 0], atol=1e-5)
    if not truncate_mid:  # without truncations the done flags change nothing
        plain = td_lambda_returns(reward, 1.0 - terminated.float(), values)
        assert torch.allclose(plain, ours, atol=1e-6)
