"""Tokenizer speed: encode + decode milliseconds per frame (wall clock and process CPU time).

Three regimes per preset and resolution:

- ``stream b1``: batch 1, one frame at a time through ``encoder_stream`` / ``decoder_stream`` with their
  bounded caches (live encoding); ``decode b1``: the decoder stream alone (what the dream env pays
  per step);
- ``clip b16``: a batch of 16 clips of ``--clip`` frames through ``encode`` / ``decode`` (what
  pre-tokenizing a dataset does).

Usage::

    python benchmarks/bench_tokenizer.py --presets nano tiny --res 128 256 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lol_dreamer.models import build_tokenizer
from lol_dreamer.models.tokenizer_config import TokenizerConfig


def _time(fn, repeats: int) -> tuple[float, float]:
    """Best wall time and best process CPU time of ``fn()`` over ``repeats`` runs after one warm-up,
    in seconds (CPU time sums all threads; on a shared machine it is the steadier number)."""
    fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


@torch.no_grad()
def bench(preset: str, res: int, arch: str, frames: int, clip: int, repeats: int) -> list[dict]:
    cfg = TokenizerConfig.preset(preset, res=res, arch=arch)
    tok = build_tokenizer(cfg.to_dict()).eval()
    params = sum(p.numel() for p in tok.parameters())
    rows: list[dict] = []
    x1 = torch.rand(frames, 1, 3, res, res)

    def stream() -> None:
        enc, dec = tok.encoder_stream(1), tok.decoder_stream(1)
        for i in range(frames):
            dec.step(enc.step(x1[i]))

    def row(mode: str, wall: float, cpu: float, n: int) -> dict:
        return dict(
            preset=preset,
            arch=arch,
            res=res,
            mode=mode,
            params=params,
            ms_per_frame=1e3 * wall / n,
            cpu_ms_per_frame=1e3 * cpu / n,
        )

    z1 = torch.rand(frames, 1, cfg.n_z, cfg.d_z) * 2 - 1

    def decode_only() -> None:
        dec = tok.decoder_stream(1)
        for i in range(frames):
            dec.step(z1[i])

    rows.append(row("stream b1", *_time(stream, repeats), frames))
    rows.append(row("decode b1", *_time(decode_only, repeats), frames))
    xb = torch.rand(16, clip, 3, res, res)
    rows.append(row("clip b16", *_time(lambda: tok.decode(tok.encode(xb)), repeats), 16 * clip))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--presets", nargs="+", default=["nano", "tiny"])
    ap.add_argument("--res", nargs="+", type=int, default=[128, 256])
    ap.add_argument("--arch", nargs="+", default=["transformer"], choices=["transformer", "cnn"])
    ap.add_argument("--frames", type=int, default=8, help="frames streamed at batch 1")
    ap.add_argument("--clip", type=int, default=4, help="frames per clip at batch 16")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats (best is reported)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    print(
        f"{'preset':<7} {'arch':<11} {'res':>4} {'mode':<10} {'params':>8} {'ms/frame':>9} {'cpu ms/frame':>13}"
    )
    for arch in args.arch:
        for preset in args.presets:
            for res in args.res:
                for r in bench(preset, res, arch, args.frames, args.clip, args.repeats):
                    rows.append(r)
                    print(
                        f"{r['preset']:<7} {r['arch']:<11} {r['res']:>4} {r['mode']:<10} "
                        f"{r['params'] / 1e6:>7.2f}M {r['ms_per_frame']:>9.1f} {r['cpu_ms_per_frame']:>13.1f}",
                        flush=True,
                    )
    meta = dict(threads=torch.get_num_threads(), torch=torch.__version__)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
