"""Cost of the shared training loop on the tokenizer: loop overhead, checkpointing, tokenization speed.

Measures, for one tokenizer preset on random clips:

- a bare PyTorch step (forward + MSE + backward + AdamW) versus a step of the shared trainer
  (schedule, clipping, EMA, NaN checks, logging), both after warm-up;
- the time to write a full checkpoint (``model.safetensors`` + ``state/``);
- streamed tokenization throughput (``lol-dreamer tokenize``'s inner loop) in frames/s.

Example:
    python benchmarks/bench_trainer.py --preset nano --res 128 --batch-size 4 --seq-len 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lol_dreamer.latents import encode_episodes
from lol_dreamer.models import build_tokenizer
from lol_dreamer.models.tokenizer_config import TokenizerConfig
from lol_dreamer.objectives.tokenizer_loss import TokenizerLoss
from lol_dreamer.training import TrainConfig, Trainer
from lol_dreamer.training.tokenizer_job import TokenizerObjective


class _Episode:
    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="nano")
    ap.add_argument("--arch", default="transformer", choices=("transformer", "cnn"))
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--tokenize-episodes", type=int, default=4)
    ap.add_argument("--tokenize-frames", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = TokenizerConfig.preset(args.preset, res=args.res, arch=args.arch).to_dict()
    gen = torch.Generator().manual_seed(0)
    clips = torch.rand(args.batch_size, args.seq_len, 3, args.res, args.res, generator=gen)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    model = build_tokenizer(cfg).to(dev).train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = clips.to(dev)
    times = []
    for i in range(args.steps + 2):
        sync()
        t = time.perf_counter()
        recon, _ = model(batch)
        (recon - batch).pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= 2:
            times.append(time.perf_counter() - t)
    bare = float(np.median(times))

    torch.manual_seed(0)
    model = build_tokenizer(cfg)
    tcfg = TrainConfig(
        steps=args.steps + 2,
        lr=1e-4,
        ema_decay=0.999,
        device=args.device,
        progress=False,
        save_every=0,
    )
    objective = TokenizerObjective(TokenizerLoss(lpips_weight=0.0))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, objective, lambda step: {"frames": clips}, tcfg, Path(tmp) / "run",
                          run_config={"kind": "tokenizer", "model": cfg})  # fmt: skip
        result = trainer.fit()
        rows = [
            json.loads(line)
            for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        ]
        shared = float(np.median([1.0 / r["perf/steps_per_s"] for r in rows[2:]]))
        t = time.perf_counter()
        trainer.save()
        save_s = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (Path(tmp) / "run").rglob("*.safetensors"))
    assert len(result.losses) == args.steps + 2

    model.eval()
    eps = [_Episode((np.random.default_rng(i).random((args.tokenize_frames, args.res, args.res, 3)) * 255).astype(np.uint8))
           for i in range(args.tokenize_episodes)]  # fmt: skip
    list(
        encode_episodes(model, eps[:1], batch_size=1, max_frames=2, device=dev, progress=False)
    )  # warm-up
    sync()
    t = time.perf_counter()
    n = sum(
        len(lat)
        for _, lat, _ in encode_episodes(
            model, eps, batch_size=len(eps), device=dev, progress=False
        )
    )
    sync()
    tok_fps = n / (time.perf_counter() - t)

    out = {
        "preset": args.preset, "arch": args.arch, "res": args.res, "params_M": n_params / 1e6,
        "batch": f"{args.batch_size}x{args.seq_len}", "threads": args.threads, "device": args.device,
        "bare_step_s": bare, "trainer_step_s": shared, "trainer_overhead_pct": 100 * (shared / bare - 1),
        "checkpoint_save_s": save_s, "checkpoint_MiB": size / 2**20, "tokenize_frames_per_s": tok_fps,
    }  # fmt: skip
    print(f"{'quantity':<34}{'value':>14}")
    print(
        f"{'preset / arch / res':<34}{args.preset + ' / ' + args.arch + ' / ' + str(args.res):>14}"
    )
    print(f"{'parameters (M)':<34}{n_params / 1e6:>14.3f}")
    print(f"{'bare step (s), b×T=' + out['batch']:<34}{bare:>14.3f}")
    print(f"{'shared-trainer step (s)':<34}{shared:>14.3f}")
    print(f"{'trainer overhead (%)':<34}{out['trainer_overhead_pct']:>14.1f}")
    print(f"{'checkpoint save (s)':<34}{save_s:>14.3f}")
    print(f"{'checkpoint size (MiB)':<34}{size / 2**20:>14.2f}")
    print(f"{'tokenize (frames/s), batch ' + str(len(eps)):<34}{tok_fps:>14.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
