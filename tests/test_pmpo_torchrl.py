"""PMPO on a real TorchRL rollout of the dream env: the actor and the loss speak DreamTorchEnv's layout."""

import torch
from worldmodel_fixture import make_world_model

from lol_dreamer.agents.pmpo import PMPOLoss
from lol_dreamer.policy import Policy, join_action


def test_pmpo_on_dream_torchrl_rollout(tmp_path):
    from lol_dreamer.envs.torchrl_env import DreamTorchEnv
    from lol_dreamer.world_model import load_world_model

    wm = load_world_model(make_world_model(tmp_path / "wm", heads=True, context=4))
    heads = wm.heads
    with torch.no_grad():
        heads.policy.out.weight.normal_(0, 0.5)  # stands in for the trained phase-2 head
    heads.requires_grad_(True)
    env = DreamTorchEnv(world_model=wm, num_envs=3, decode=False, task="farm")
    actor = Policy(heads, seed=0).as_torchrl_actor()
    H = 5
    with torch.no_grad():
        td = env.rollout(H, actor, break_when_any_done=False)
    assert td.batch_size == (3, H)
    loss = PMPOLoss(heads)
    out = loss(td)
    assert out["kl"] == 0  # the policy is still its prior
    total = out["loss_policy"] + out["loss_kl"] + out["loss_value"]
    total.backward()
    assert (
        heads.policy.out.weight.grad.abs().sum() > 0 and heads.value.out.weight.grad.abs().sum() > 0
    )
    # the loss saw the actions the actor took, in the [b, H, 9] layout
    a = join_action(td["action"])
    logp = heads.policy(td["agent_features"], 0).log_prob(a)
    assert torch.allclose(td["action_log_prob"], logp, atol=1e-5)
