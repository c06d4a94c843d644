"""Does a world model read its context and its actions? Teacher-forced next-frame error.

For ``--clips`` windows of ``context`` frames from held-out episodes, the context frames are noised
to τ_ctx (as the sampler does; ``--tau-ctx`` tries other levels) and the last frame to a signal
level τ; the table gives the mean squared error of the model's clean-latent prediction of the last
frame, in the model's normalised latent units, with the context, with the context but every
window given another window's actions ("shuffled actions"), and with the last frame alone (no
context), beside copying the previous frame. A model that reads its context beats "no context" at
low τ and approaches or beats "copy last" at τ = 0; one that follows its actions is worse with
shuffled ones.

``--per-token`` splits the τ = 0 error over the latent tokens: the half whose value changes least
from frame to frame ("static": background, towers) and the half that changes most ("moving"), each
as model error / copy-last error.

    python benchmarks/context_use.py --world-model WM [WM2 ...] --data DATA --json context.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def windows(wm, ds, clips: int, t: int, seed: int) -> tuple[dict[str, torch.Tensor], int]:
    """``clips`` random windows of ``t`` frames from the world model's held-out episodes, as a
    batch in stored alignment, and the number of episodes they come from."""
    held = wm.config.get("data", {}).get("held_out_episodes") or []
    names = [n for n in ds.names if n in held] or ds.names[-1:]
    rng = np.random.default_rng(seed)
    zs, acts, labs = [], [], []
    for i in range(clips):
        ep = ds[ds.names.index(names[i % len(names)])]
        if ep.latents is None:
            raise SystemExit("the dataset has no latents; run `lol-dreamer tokenize` first")
        s = int(rng.integers(0, len(ep) - t))
        zs.append(torch.from_numpy(np.array(ep.latents[s : s + t])).float())
        acts.append(torch.from_numpy(np.array(ep.actions[s : s + t])).long())
        labs.append(torch.from_numpy(np.array(ep.labeled[s : s + t])).bool())
    batch = {"latents": torch.stack(zs), "actions": torch.stack(acts), "labeled": torch.stack(labs)}
    return batch, len(names)


@torch.no_grad()
def probe(wm, batch, taus, tau_ctx, seed: int, per_token: bool) -> list[dict]:
    from lol_dreamer.models.dynamics import shift_actions
    from lol_dreamer.world_model_training import predict_next_frame

    m = wm.dynamics
    cfg = m.cfg
    a, lab = shift_actions(batch["actions"], batch["labeled"])
    noise = torch.randn(batch["latents"].shape, generator=torch.Generator().manual_seed(seed))
    step = torch.full((len(a), 1), cfg.step_idx_min)
    rows = []
    for ctx in tau_ctx:
        for tau_last in taus:
            # the same noise for every row: predict_next_frame draws it from the same seed
            p = predict_next_frame(m, batch, torch.Generator().manual_seed(seed), ctx, tau_last)
            tl = tau_last / cfg.k_max
            last_in = ((1 - tl) * noise[:, -1] + tl * p.target)[:, None]
            tau1 = torch.full((len(a), 1), tau_last)
            alone = m(last_in, tau1, step, a[:, -1:], lab[:, -1:]).z1[:, 0]
            copy_tok = (p.target - p.last).pow(2).mean((0, 2))  # per latent token
            row = {
                "tau_ctx": ctx / cfg.k_max,
                "tau": tl,
                "mse_with_context": float((p.pred - p.target).pow(2).mean()),
                "mse_shuffled_actions": float((p.pred_shuffled - p.target).pow(2).mean()),
                "mse_without_context": float((alone - p.target).pow(2).mean()),
                "mse_copy_last": float(copy_tok.mean()),
            }
            if per_token and tau_last == 0:
                # the half of the tokens that change least from frame to frame, and the rest
                order = copy_tok.argsort()
                err_tok = (p.pred - p.target).pow(2).mean((0, 2))
                for name, idx in (
                    ("static", order[: len(order) // 2]),
                    ("moving", order[len(order) // 2 :]),
                ):
                    row[f"ratio_{name}_tokens"] = float(err_tok[idx].mean() / copy_tok[idx].mean())
            rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--world-model", required=True, nargs="+", help="world-model folder(s)")
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
    p.add_argument(
        "--tau-ctx",
        type=int,
        nargs="+",
        default=None,
        help="τ grid indices of the context frames (default: the model's τ_ctx, 58 of 64)",
    )
    p.add_argument("--per-token", action="store_true", help="split the τ = 0 error over tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the tables here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from lol_dreamer.data import open_dataset
    from lol_dreamer.io import atomic_write_json
    from lol_dreamer.world_model import load_world_model

    ds = open_dataset(args.data)
    report = {}
    for path in args.world_model:
        wm = load_world_model(path)
        cfg = wm.dynamics.cfg
        batch, n_eps = windows(wm, ds, args.clips, cfg.context, args.seed)
        t0 = time.perf_counter()
        rows = probe(
            wm, batch, args.taus, args.tau_ctx or [cfg.tau_ctx_idx], args.seed, args.per_token
        )
        report[path] = rows
        print(f"\n{path}: {len(batch['latents'])} windows of {cfg.context} frames from {n_eps} held-out episode(s), "
              f"{time.perf_counter() - t0:.1f} s; MSE in normalised latent units (1.0 = predicting the mean)")  # fmt: skip
        print("| τ_ctx | τ of the predicted frame | with context | shuffled actions | without context | copy last frame |")  # fmt: skip
        print("|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['tau_ctx']:.3f} | {r['tau']:.3f} | {r['mse_with_context']:.4f} | "
                f"{r['mse_shuffled_actions']:.4f} | {r['mse_without_context']:.4f} | {r['mse_copy_last']:.4f} |"
            )
        for r in rows:
            if "ratio_static_tokens" in r:
                print(
                    f"τ_ctx {r['tau_ctx']:.3f}, τ = 0, model / copy-last error: static half of the tokens "
                    f"{r['ratio_static_tokens']:.2f}, moving half {r['ratio_moving_tokens']:.2f}"
                )
    if args.json:
        atomic_write_json(args.json, {"world_models": args.world_model, "rows": report})


if __name__ == "__main__":
    main()
