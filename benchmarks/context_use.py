"""Does a world model read its context? Teacher-forced next-frame error with and without context.

For ``--clips`` windows of ``context`` frames from held-out episodes, the context frames are noised
to τ_ctx (as the sampler does) and the last frame to a signal level τ; the table gives the mean
squared error of the model's clean-latent prediction of the last frame, in the model's normalised
latent units, with the context and with the last frame alone (no context), beside copying the
previous frame. A model that reads its context beats "no context" at low τ and approaches or beats
"copy last" at τ = 0.

    python benchmarks/context_use.py --world-model RUN/world_model --data DATA --json context.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--world-model", required=True, help="world-model folder")
    p.add_argument(
        "--data",
        required=True,
        help="tokenized dataset (the world model's held-out episodes are used)",
    )
    p.add_argument("--clips", type=int, default=32, help="windows evaluated (default %(default)s)")
    p.add_argument(
        "--taus",
        type=int,
        nargs="+",
        default=[0, 16, 32, 48, 60],
        help="τ grid indices of the last frame",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the table here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from lol_dreamer.data import open_dataset
    from lol_dreamer.io import atomic_write_json
    from lol_dreamer.models.dynamics import shift_actions
    from lol_dreamer.world_model import load_world_model

    wm = load_world_model(args.world_model)
    m = wm.dynamics
    cfg = m.cfg
    held = wm.config.get("data", {}).get("held_out_episodes") or []
    ds = open_dataset(args.data)
    names = [n for n in ds.names if n in held] or ds.names[-1:]
    rng = np.random.default_rng(args.seed)
    t = cfg.context
    zs, acts, labs = [], [], []
    for i in range(args.clips):
        ep = ds[ds.names.index(names[i % len(names)])]
        if ep.latents is None:
            raise SystemExit(f"{args.data} has no latents; run `lol-dreamer tokenize` first")
        s = int(rng.integers(0, len(ep) - t))
        zs.append(torch.from_numpy(np.array(ep.latents[s : s + t])).float())
        acts.append(torch.from_numpy(np.array(ep.actions[s : s + t])).long())
        labs.append(torch.from_numpy(np.array(ep.labeled[s : s + t])).bool())
    z = m.normalize_latents(torch.stack(zs))
    a, lab = shift_actions(torch.stack(acts), torch.stack(labs))
    g = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(z.shape, generator=g)
    step = torch.full(z.shape[:2], cfg.step_idx_min)
    copy = float((z[:, -1] - z[:, -2]).pow(2).mean())
    rows = []
    t0 = time.perf_counter()
    for tau_last in args.taus:
        tau = torch.full(z.shape[:2], cfg.tau_ctx_idx)
        tau[:, -1] = tau_last
        tf = (tau.float() / cfg.k_max)[..., None, None]
        zt = (1 - tf) * noise + tf * z
        with torch.no_grad():
            full = m(zt, tau, step, a, lab).z1[:, -1]
            alone = m(zt[:, -1:], tau[:, -1:], step[:, -1:], a[:, -1:], lab[:, -1:]).z1[:, 0]
        rows.append({
            "tau": tau_last / cfg.k_max,
            "mse_with_context": float((full - z[:, -1]).pow(2).mean()),
            "mse_without_context": float((alone - z[:, -1]).pow(2).mean()),
            "mse_copy_last": copy,
        })  # fmt: skip
    print(f"{args.world_model}: {len(zs)} windows of {t} frames from {len(names)} held-out episode(s), "
          f"{time.perf_counter() - t0:.1f} s; MSE in normalised latent units (1.0 = predicting the mean)")  # fmt: skip
    print("| τ of the predicted frame | with context | without context | copy last frame |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['tau']:.3f} | {r['mse_with_context']:.4f} | {r['mse_without_context']:.4f} | {r['mse_copy_last']:.4f} |"
        )
    if args.json:
        atomic_write_json(args.json, {"world_model": args.world_model, "rows": rows})


if __name__ == "__main__":
    main()
