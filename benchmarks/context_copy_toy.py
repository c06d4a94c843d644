"""Toy check of how fast shortcut forcing teaches a dynamics model to read its context.

Sequences of 8 identical random frames (``test`` preset, latents 8 × 4): the only way to predict a
frame from pure noise is to copy the context. Every 50 steps it prints the error of that prediction
(context at τ_ctx, the last frame at τ = 0; 1.0 = knowing nothing), for a chosen flow fraction.

    python benchmarks/context_copy_toy.py --flow-frac none --steps 300
    python benchmarks/context_copy_toy.py --flow-frac 0.5 --steps 300
"""

from __future__ import annotations

import argparse

import torch

from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel
from lol_dreamer.objectives.shortcut import ShortcutConfig, ShortcutObjective

T, N_Z, D_Z = 8, 8, 4


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--flow-frac",
        default="none",
        help="probability of the flow term, or 'none' (uniform steps)",
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--preset", default="test")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    flow = None if args.flow_frac == "none" else float(args.flow_frac)
    cfg = DynamicsConfig.preset(
        args.preset, n_z=N_Z, d_z=D_Z, kalman_skip=False
    )  # the network alone
    model = DynamicsModel(cfg)
    obj = ShortcutObjective(ShortcutConfig(k_max=cfg.k_max, flow_frac=flow))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))

    def batch(b: int) -> dict[str, torch.Tensor]:
        z = torch.randn(b, 1, N_Z, D_Z).expand(b, T, N_Z, D_Z).clone()
        return {"latents": z, "actions": torch.zeros(b, T, 9, dtype=torch.long)}

    def probe() -> float:
        z = batch(32)["latents"]
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
        tau = torch.full((32, T), cfg.tau_ctx_idx)
        tau[:, -1] = 0
        tf = (tau.float() / cfg.k_max)[..., None, None]
        step = torch.full((32, T), cfg.step_idx_min)
        with torch.no_grad():
            out = model((1 - tf) * noise + tf * z, tau, step).z1
        return float((out[:, -1] - z[:, -1]).pow(2).mean())

    print(f"flow_frac {args.flow_frac}, preset {args.preset}")
    print("| step | error of the frame predicted from noise with context |")
    print("|---:|---:|")
    for s in range(args.steps + 1):
        if s % 50 == 0:
            print(f"| {s} | {probe():.4f} |", flush=True)
        if s < args.steps:
            out = obj(model, batch(8), s)
            opt.zero_grad()
            out.loss.backward()
            opt.step()


if __name__ == "__main__":
    main()
