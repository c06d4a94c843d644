"""Shared fixture for the phase-3 tests: a tiny phase-2 agent folder and a dataset tokenized for it.

The agent folder is a real agent world model (``worldmodel_fixture.make_world_model(heads=True)``,
written through ``save_world_model``) whose policy head gets non-zero, "trained" weights at every MTP
distance, and whose config carries the phase-2 fields (``task``, ``act_distance``). The dataset is
written with the public data API and tokenized with the agent's own tokenizer copy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from wm_train_fixture import make_dataset
from worldmodel_fixture import RES, make_world_model

from lol_dreamer.io import atomic_write_json, read_json


def make_agent_folder(
    out: str | Path,
    *,
    seed: int = 0,
    act_distance: int = 0,
    policy_scale: float = 0.5,
    reward_scale: float = 0.05,
    res: int = RES,
) -> Path:
    """Write a phase-2 agent folder (test presets, MTP L = 2) with a non-trivial policy head.

    ``reward_scale`` is the std of the reward head's output weights (larger → rewards that depend
    more strongly on the imagined state, hence on the actions). ``res`` is the frame side (LaneSim
    renders at 32 px or more, so a policy that plays the real game needs ``res >= 32``).
    """
    from lol_dreamer.checkpoint import load_model, save_weights

    out = make_world_model(
        out, heads=True, n_starts=6, start_frames=4, context=8, seed=seed,
        reward_scale=reward_scale, res=res,
    )  # fmt: skip
    model = load_model(out)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        w, b = model.heads.policy.out.weight, model.heads.policy.out.bias
        w.copy_(torch.randn(w.shape, generator=g) * policy_scale)
        b.copy_(torch.randn(b.shape, generator=g) * policy_scale)
    cfg = read_json(out / "config.json")
    save_weights(out / "model.safetensors", model, cfg["model"])
    model_cfg = {**cfg["model"], "mtp_distance": act_distance}
    cfg.update(model=model_cfg, heads=model_cfg["heads"], task="farm", task_id=0,
               mtp=model_cfg["heads"]["mtp"], act_distance=act_distance)  # fmt: skip
    atomic_write_json(out / "config.json", cfg)
    return out


def make_agent_dataset(
    root: str | Path, agent: str | Path, n_episodes: int = 3, length: int = 20
) -> Path:
    """Episodes tokenized with ``agent``'s tokenizer copy (so phase 3 accepts them as contexts)."""
    return make_dataset(root, Path(agent) / "tokenizer", n_episodes=n_episodes, length=length)


def interrupt_imagine_at(monkeypatch, step: int):
    """Make phase-3 training raise KeyboardInterrupt at optimiser ``step``; returns the undo."""
    from lol_dreamer.agents.imagine import ImagineObjective

    original = ImagineObjective.__call__

    def crash(self, model, batch, s):
        if s == step:
            raise KeyboardInterrupt
        return original(self, model, batch, s)

    monkeypatch.setattr(ImagineObjective, "__call__", crash)
    return lambda: monkeypatch.setattr(ImagineObjective, "__call__", original)
