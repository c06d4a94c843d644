"""Decoding in bf16 vs fp32: frame differences and decode time of a trained tokenizer.

Encodes held-out frames of a dataset with a trained tokenizer run, decodes the latents once in fp32
and once under a bf16 autocast (what ``DreamBatch(decode_dtype="bfloat16")`` and the ``"auto"``
setting on a CPU with native bf16 do), and reports how far the 8-bit frames move, against how far the
fp32 reconstruction already is from the real frames. Also times a batch-1 decode in both dtypes
(process CPU time, one thread).

Example:
    python benchmarks/bench_decode_dtype.py --tokenizer runs/default/tokenizer_cnn \
        --data runs/default/data2 --frames-per-episode 24 --json decode_dtype.json
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
import torch

from lol_dreamer.io import atomic_write_json


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats → integer 8-bit levels (as the dream envs round them)."""
    return (x.float().clamp(0, 1) * 255.0).round().to(torch.int16)


def cpu_ms(fn, n: int = 10) -> float:
    """Best-of-3 process CPU milliseconds per call of ``fn`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n)
    return 1000.0 * best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tokenizer", required=True, help="a trained tokenizer run folder")
    p.add_argument("--data", required=True, help="the dataset folder it was trained on")
    p.add_argument(
        "--held-out", type=float, default=0.1, help="held-out fraction (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="split seed (default %(default)s)")
    p.add_argument(
        "--frames-per-episode",
        type=int,
        default=24,
        help="evenly spaced frames per held-out episode (default %(default)s)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    from lol_dreamer.checkpoint import load_model
    from lol_dreamer.data.dataset import open_dataset

    torch.set_num_threads(args.threads)
    tok = load_model(args.tokenizer)
    _, held = open_dataset(args.data).split(held_out=args.held_out, seed=args.seed)
    hist = np.zeros(256, dtype=np.int64)
    psnr_dtype, psnr_real = [], []
    for ep in held:
        frames = ep.frames
        idx = np.linspace(0, len(frames) - 1, args.frames_per_episode).astype(int)
        x = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(0, 3, 1, 2)[None]
        x = x.float() / 255.0
        with torch.no_grad():
            z = tok.encode(x)
            full = tok.decode(z)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = tok.decode(z).float()
        diff = (to_levels(full) - to_levels(low)).abs()
        hist += np.bincount(diff.flatten().numpy(), minlength=256)
        psnr_dtype.append(psnr(full, low))
        psnr_real.append(psnr(full, x))
    z1 = z[:, :1].contiguous()
    with torch.no_grad():
        ms32 = cpu_ms(lambda: tok.decode(z1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ms16 = cpu_ms(lambda: tok.decode(z1))
    total = int(hist.sum())
    res: dict[str, Any] = {
        "tokenizer": args.tokenizer,
        "held_out_episodes": len(held),
        "values": total,
        "level_diff_fraction": {str(k): float(hist[k] / total) for k in range(5)},
        "max_level_diff": int(np.nonzero(hist)[0].max()),
        "psnr_bf16_vs_fp32_db": float(np.mean(psnr_dtype)),
        "psnr_fp32_vs_real_db": float(np.mean(psnr_real)),
        "decode_b1_cpu_ms": {"float32": ms32, "bfloat16": ms16},
    }
    print(f"{len(held)} held-out episodes, {total:,} 8-bit values")
    print("|fp32 − bf16| in 8-bit levels: " + ", ".join(
        f"{k}: {100 * v:.3f} %" for k, v in res["level_diff_fraction"].items()
    ) + f"; max {res['max_level_diff']}")  # fmt: skip
    print(
        f"PSNR bf16 vs fp32 decode {res['psnr_bf16_vs_fp32_db']:.1f} dB; "
        f"fp32 decode vs real frames {res['psnr_fp32_vs_real_db']:.1f} dB"
    )
    print(f"batch-1 decode: fp32 {ms32:.1f} ms CPU, bf16 {ms16:.1f} ms CPU ({args.threads} thread)")
    if args.json:
        atomic_write_json(args.json, res)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
