"""Toy check of how fast shortcut forcing teaches a dynamics model to follow its actions.

Sequences of 8 latents (``test`` preset, latents 8 × 4) where each frame is the previous one moved
by a fixed random vector chosen by the action's movement bin (4 bins, drawn at random every frame):
only the action tells where the next frame goes. Every 100 steps it prints the held-out flow loss
with the true actions and with every sequence given another's actions, and their ratio minus one
(``action_gain``, the measure ``train dynamics`` logs as ``eval/action_gain``; 0 = the actions are
ignored), for a chosen fraction of sequences with a clean history (``--context-frac``).

    python benchmarks/action_toy.py --context-frac 0 --steps 400
    python benchmarks/action_toy.py --context-frac 0.5 --steps 400
"""

from __future__ import annotations

import argparse

import torch

from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel
from lol_dreamer.objectives.shortcut import ShortcutConfig, ShortcutObjective
from lol_dreamer.world_model_training import held_out_eval

T, N_Z, D_Z, BINS = 8, 8, 4, 4


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--context-frac", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = DynamicsConfig.preset("test", n_z=N_Z, d_z=D_Z, kalman_skip=False)  # the network alone
    model = DynamicsModel(cfg)
    obj = ShortcutObjective(
        ShortcutConfig(
            k_max=64, flow_frac=0.5, independent_frac=0.1, context_frac=args.context_frac
        )
    )
    probe = ShortcutObjective(
        ShortcutConfig(k_max=64, flow_frac=0.5, independent_frac=0.0, context_frac=1.0)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(0)
    shift = torch.randn(BINS, N_Z, D_Z, generator=g) * 0.5

    def clips(b: int) -> dict[str, torch.Tensor]:
        a = torch.zeros(b, T, 9, dtype=torch.long)
        a[..., 0] = torch.randint(0, BINS, (b, T), generator=g)
        z0 = torch.randn(b, 1, N_Z, D_Z, generator=g)
        z = torch.cat((z0, z0 + shift[a[:, :-1, 0]].cumsum(1)), 1)  # actions[t]: frame t → t + 1
        return {"latents": z, "actions": a}

    held = [clips(32)]
    rows = []
    print(f"context_frac {args.context_frac}")
    print("| step | flow loss | with shuffled actions | action gain |")
    print("|---:|---:|---:|---:|")
    for s in range(args.steps):
        out = obj(model, clips(8), s)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if (s + 1) % 100 == 0:
            with torch.no_grad():
                r = held_out_eval(probe, held, shuffled_actions=True)(model.eval(), 0)
            model.train()
            rows.append({"step": s + 1, **r})
            print(
                f"| {s + 1} | {r['flow']:.4f} | {r['flow_shuffled']:.4f} | {r['action_gain']:.4f} |",
                flush=True,
            )
    if args.json:
        from lol_dreamer.io import atomic_write_json

        atomic_write_json(args.json, {"context_frac": args.context_frac, "rows": rows})


if __name__ == "__main__":
    main()
