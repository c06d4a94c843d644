"""``lol-dreamer train tokenizer``: phase 1a on a dataset of episodes (SPEC §5).

Builds the tokenizer from a size preset at the data's resolution, samples random clips from the
training episodes, optimises MSE + LPIPS (running-RMS normalised) with MAE patch dropout, and
reports held-out reconstruction quality while training. Everything else is the shared loop.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lol_dreamer.training.config import LossOutput, TrainConfig


class TokenizerObjective:
    """Adapts :class:`~lol_dreamer.objectives.tokenizer_loss.TokenizerLoss` to the trainer's protocol.

    ``model(frames)`` reconstructs with MAE drop masks sampled per image (training mode); the running
    RMS normalisers are checkpointed through ``state_dict`` / ``load_state_dict``.

    Args:
        loss: the reconstruction loss.
    """

    def __init__(self, loss: nn.Module) -> None:
        self.loss = loss

    def __call__(self, model: nn.Module, batch: dict[str, Any], step: int) -> LossOutput:
        frames = batch["frames"]  # b t 3 H W in [0, 1]
        recon, _ = model(frames)
        total, terms = self.loss(recon, frames)
        return LossOutput(total, terms)

    def to(self, device: torch.device | str) -> TokenizerObjective:
        self.loss.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.loss.rms_state()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.loss.load_rms_state(state)


def reconstruction_eval(batches: list[dict[str, torch.Tensor]]):
    """An ``eval_fn`` scoring clean (unmasked) reconstructions of fixed held-out clips.

    Args:
        batches: held-out batches with ``frames [b, t, 3, H, W]``.

    Returns:
        ``eval_fn(model, step) -> {"mse", "psnr", "ssim"}`` (means over every held-out frame).
    """
    from lol_dreamer.evaluation.metrics import psnr, ssim

    def eval_fn(model: nn.Module, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        mse, ps, ss = [], [], []
        for batch in batches:
            frames = batch["frames"].to(device)
            recon = model.decode(model.encode(frames, mask_ratio=0.0)).float()
            mse.append((recon - frames).pow(2).mean(dim=(-3, -2, -1)).flatten().cpu())
            ps.append(psnr(recon, frames).flatten().cpu())
            if min(frames.shape[-2:]) >= 7:
                ss.append(ssim(recon, frames).flatten().cpu())
        out = {
            "mse": float(torch.cat(mse).mean()),
            "psnr": float(torch.cat(ps).clamp(max=100).mean()),
        }
        if ss:
            out["ssim"] = float(torch.cat(ss).mean())
        return out

    return eval_fn


def run(args: argparse.Namespace) -> int:
    """``lol-dreamer train tokenizer``."""
    from lol_dreamer.objectives.lpips_weights import (
        LPIPSWeightsMissing,
        find_vgg16_weights,
        missing_message,
    )

    # Decide about LPIPS before touching data or models: never start a run that cannot finish.
    if args.lpips_weight > 0 and find_vgg16_weights(args.lpips_weights) is None:
        raise LPIPSWeightsMissing(missing_message(args.lpips_weights))

    from lol_dreamer.checkpoint import load_run_config
    from lol_dreamer.data import SequenceSampler, open_dataset
    from lol_dreamer.models import build_tokenizer
    from lol_dreamer.models.tokenizer_config import TokenizerConfig
    from lol_dreamer.objectives.tokenizer_loss import TokenizerLoss
    from lol_dreamer.training.distributed import cleanup, init_distributed
    from lol_dreamer.training.state import has_state
    from lol_dreamer.training.trainer import seed_everything, train

    cfg = TrainConfig.from_args(args)
    dist = init_distributed(cfg.device)
    out = Path(args.out)
    ds = open_dataset(args.data)
    if len(ds) < 2:
        raise ValueError(
            f"{args.data} holds {len(ds)} episode(s); a held-out split needs at least 2 (collect more)"
        )
    train_ds, held_ds = ds.split(held_out=args.held_out, seed=args.split_seed)
    res = ds[0].resolution
    if args.resume and has_state(out):
        model_cfg = load_run_config(out)["model"]
    else:
        model_cfg = TokenizerConfig.preset(args.preset, res=res, arch=args.arch).to_dict()
        if getattr(args, "mae_max_ratio", None) is not None:
            model_cfg = TokenizerConfig.from_dict(
                {**model_cfg, "mae_max_ratio": args.mae_max_ratio}
            ).to_dict()  # validated: a ratio outside [0, 1) is a clear error
    if model_cfg["res"] != res:
        raise ValueError(
            f"the data is {res}px but the tokenizer in {out} is {model_cfg['res']}px; use a new --out"
        )
    seed_everything(args.seed)
    model = build_tokenizer(model_cfg)
    sampler = SequenceSampler(
        train_ds, args.seq_len, args.batch_size, seed=args.seed, fields=("frames",),
        rank=dist.rank, world_size=dist.world_size,
    )  # fmt: skip
    held = SequenceSampler(
        held_ds, args.seq_len, args.batch_size, seed=args.seed + 1, fields=("frames",)
    )
    eval_batches = [held.sample(i) for i in range(args.eval_batches)]
    loss = TokenizerLoss(
        lpips_weight=args.lpips_weight,
        lpips_weights_path=args.lpips_weights,
        lpips_max_images=args.lpips_max_images,
    )
    n_params = sum(p.numel() for p in model.parameters())
    tok_cfg = TokenizerConfig.from_dict(model_cfg)
    run_config = {
        "kind": "tokenizer",
        "model": model_cfg,
        "data": {
            "path": str(Path(args.data).resolve()),
            "episodes": len(ds),
            "train_episodes": len(train_ds),
            "held_out_episodes": len(held_ds),
            "held_out": args.held_out,
            "split_seed": args.split_seed,
            "seq_len": args.seq_len,
            "resolution": res,
        },
        "objective": {
            "lpips_weight": args.lpips_weight,
            "lpips_weights": str(find_vgg16_weights(args.lpips_weights))
            if args.lpips_weight > 0
            else None,
            "lpips_max_images": args.lpips_max_images,
        },
        "preset": args.preset,
        "n_params": n_params,
    }
    if dist.is_main:
        print(
            f"Training a {model_cfg['arch']} tokenizer ({args.preset}, {n_params / 1e6:.2f} M parameters, "
            f"{res}px, latents {tok_cfg.n_z}×{tok_cfg.d_z}) "
            f"on {len(train_ds)} episodes, {len(held_ds)} held out, into {out}."
        )
    try:
        train(
            model, TokenizerObjective(loss), sampler, cfg, out,
            eval_fn=reconstruction_eval(eval_batches), run_config=run_config, resume=args.resume,
        )  # fmt: skip
    except BaseException:
        cleanup(sync=False)
        raise
    cleanup()
    if dist.is_main:
        print(
            f"Next: `lol-dreamer tokenize --tokenizer {out} --data {args.data}` and `lol-dreamer eval tokenizer --tokenizer {out} --data {args.data}`."
        )
    return 0
