"""How well does the Kalman skip alone predict the next frame, at each latent scale?

A dynamics model with ``kalman_skip`` whose output layer is zero returns exactly the latent filter's
estimate (``filter_latents``: a per-entry AR(1) prior with the frame-to-frame correlation measured
on the training latents). This builds such a model from a dataset's training latents (no training,
no weights), and for each ``--scales`` value of ``latent_scale`` measures the next-frame error the
trainer logs (``next_frame_eval``: held-out windows of 17 frames, history at τ_ctx, the last frame
from pure noise) against copying the last clean latent. It is the floor a fresh model starts from
and shows how much of the one-step error is context noise: at scale 1 the noise at τ_ctx hides part
of the frame-to-frame change, at larger scales it hides less.

    python benchmarks/filter_floor.py --data DATA --tokenizer TOK --scales 1 2 3 5 --json floor.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lol_dreamer.data import SequenceSampler
from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel, latent_rho, latent_stats
from lol_dreamer.world_model_training import next_frame_eval, open_latent_split


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="tokenized dataset")
    p.add_argument("--tokenizer", required=True, help="tokenizer run that made the latents")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    p.add_argument("--held-out", type=float, default=0.1, help="as `train dynamics` (default 0.1)")
    p.add_argument("--windows", type=int, default=64, help="held-out windows (default 64)")
    p.add_argument("--seed", type=int, default=77)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    split = open_latent_split(args.data, args.tokenizer, args.held_out, 0)
    eps = [ep.latents for ep in split.train]
    mean, std = latent_stats(eps)
    rho = latent_rho(eps, mean, std)
    held = SequenceSampler(
        split.held, 17, 16, seed=args.seed, fields=("latents", "actions", "labeled")
    )
    batches = [held.sample(i) for i in range(max(1, args.windows // 16))]
    tok = split.tokenizer
    rows = []
    print(f"frame-to-frame correlation of the training latents: mean {float(rho.mean()):.4f}")
    print(f"{'latent scale':>12} | {'filter MSE':>10} | {'copy last':>9} | {'filter / copy':>13}")
    for scale in args.scales:
        cfg = DynamicsConfig.preset(
            "nano", n_z=tok.n_z, d_z=tok.d_z, kalman_skip=True, latent_scale=scale,
            zero_init_out=True,
        )  # fmt: skip
        model = DynamicsModel(cfg).eval()
        model.set_latent_stats(mean, std, rho)
        r = next_frame_eval(batches)(model, 0)
        # errors in the model's scale grow with scale²; the ratio does not
        row = {
            "latent_scale": scale,
            "filter_mse": r["next_frame_mse"] / scale**2,
            "copy_last_mse": r["copy_last_mse"] / scale**2,
            "ratio": r["next_frame_ratio"],
        }
        rows.append(row)
        print(
            f"{scale:>12g} | {row['filter_mse']:>10.4f} | {row['copy_last_mse']:>9.4f} | "
            f"{row['ratio']:>13.3f}"
        )
    print(
        f"({len(batches) * 16} held-out windows, {time.perf_counter() - t0:.1f} s; MSE in unit-scale standardised latents)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rho_mean": float(rho.mean()), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
