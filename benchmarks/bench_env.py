"""Dream-environment speed: DreamEnv at batch 1, vector and TorchRL envs at N = 1, 8, 64, gym overhead, memory.

Random-init world models (speed does not depend on the weights), written to a temporary folder with
the real ``save_world_model`` layout and loaded back, unless ``--world-model`` names a trained one.

What is measured (steady state, after ``--warmup`` steps):

| row                 | what                                                                          |
|---------------------|-------------------------------------------------------------------------------|
| raw sampler         | ``Sampler.step`` + ``DecoderStream.step`` at batch 1: the floor the gym layer adds to |
| DreamEnv            | ``DreamEnv.step`` (decode on): the gym layer's overhead over the raw sampler     |
| vector / torchrl    | env steps/s (= N × batched steps/s) with and without decoding                    |
| batching gain       | env steps/s at N=64 over N=1 (same env kind and decode setting)                  |
| memory              | RSS sampled while ``--memory-steps`` DreamEnv steps run (the KV cache is bounded) |

Examples:
    python benchmarks/bench_env.py --preset nano --json bench_env.json
    python benchmarks/bench_env.py --world-model runs/wm --ns 1 8 --memory-steps 2000
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lol_dreamer.io import atomic_write_json


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux ``/proc``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_world_model(
    out: Path, preset: str, res: int, context: int, n_starts: int = 16, arch: str = "transformer"
) -> Path:
    """A random-init agent world model (tokenizer + dynamics with agent tokens + heads) at ``out``.

    ``arch`` picks the tokenizer (``"transformer"`` or ``"cnn"``).
    """
    from lol_dreamer.models import build_tokenizer
    from lol_dreamer.models.agent_model import AgentWorldModel
    from lol_dreamer.models.dynamics import DynamicsConfig
    from lol_dreamer.models.heads import HeadsConfig
    from lol_dreamer.models.tokenizer_config import TokenizerConfig
    from lol_dreamer.world_model import save_world_model

    torch.manual_seed(0)
    tcfg = TokenizerConfig.preset(preset, res=res, arch=arch)
    tok = build_tokenizer(tcfg.to_dict())
    dcfg = DynamicsConfig.preset(preset, n_z=tcfg.n_z, d_z=tcfg.d_z, context=context, n_agent=1)
    model = AgentWorldModel(dcfg, HeadsConfig.preset(preset, dim=dcfg.dim))
    c = context - 1
    starts = {
        "latents": torch.rand(n_starts, c, tcfg.n_z, tcfg.d_z).mul(2).sub(1).half(),
        "actions": torch.zeros(n_starts, c, 9, dtype=torch.long),
        "tasks": torch.arange(n_starts) % 3,
    }
    return save_world_model(
        out, model=model, model_config=model.config, tokenizer=tok, tokenizer_config=tcfg.to_dict(),
        starts=starts, kind="agent", context=context,
    )  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_loop(step, n: int, warmup: int, device: torch.device, cpu_time: bool = False) -> float:
    """Seconds per call of ``step()`` over ``n`` calls after ``warmup`` calls.

    ``cpu_time`` measures this process's CPU seconds instead of wall seconds: on a shared, busy CPU
    the wall clock mostly measures the other jobs, while CPU time still compares two code paths.
    """
    clock = time.process_time if cpu_time and device.type == "cpu" else time.perf_counter
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = clock()
    for _ in range(n):
        step()
    _sync(device)
    return (clock() - t0) / n


def supported(cls: Any, **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments that ``cls.__init__`` accepts (lets this script time older trees)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def decode_context(env: Any) -> contextlib.AbstractContextManager:
    """The autocast an env's dream batch decodes under (none for fp32 or trees without it)."""
    batch = getattr(env, "batch", None) or getattr(env, "dream", None)
    dtype = getattr(batch, "decode_dtype", torch.float32)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(batch.device.type, dtype=dtype)


def bench_raw_and_dreamenv(
    wm, steps: int, warmup: int, dtype: str = "float32", decode_dtype: str = "auto"
) -> dict[str, Any]:
    """Batch-1 steps/s of the raw sampler + streaming decoder, of DreamEnv and of
    ``gym.make("LoLDream-v0")`` on the same model (wall clock and this process's CPU time)."""
    import gymnasium as gym

    from lol_dreamer.envs.dream import DreamEnv

    kw = supported(DreamEnv, dtype=dtype, decode_dtype=decode_dtype)
    env = DreamEnv(world_model=wm, torch_threads=None, **kw)
    env.reset(seed=0)
    made = gym.make("LoLDream-v0", world_model=wm, torch_threads=None, **kw)
    made.reset(seed=0)
    action = np.array([18, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64)
    sampler = env.batch.sampler if hasattr(env, "batch") else wm.sampler()
    starts = wm.starts
    g = torch.Generator(device=wm.device).manual_seed(0)
    state = sampler.start(
        starts.latents[:1].float().to(wm.device),
        starts.actions[:1].to(wm.device),
        task=torch.zeros(1, dtype=torch.long),
        generator=g,
    )
    dec = wm.tokenizer.decoder_stream(1)
    act = torch.from_numpy(action)[None].to(wm.device)

    @torch.no_grad()
    def raw() -> None:
        z, feats = sampler.step(state, act, generator=g)
        with decode_context(env):
            dec.step(z)
        if feats is not None:  # a world model with agent heads (phase 2) also predicts these
            wm.reward(feats.mean(1))
            wm.continue_prob(feats.mean(1))

    def made_step() -> None:
        made.step(action)

    # Interleave the three so machine-load drift hits all alike; keep the best of 3 rounds. The
    # overhead compares CPU time (one thread), which the other jobs on a busy machine disturb less.
    fns = {"raw": raw, "dreamenv": lambda: env.step(action), "gym_make": made_step}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(3):
        for k, fn in fns.items():
            wall[k].append(time_loop(fn, steps, warmup, wm.device))
            cpu[k].append(time_loop(fn, steps, 0, wm.device, cpu_time=True))
    out: dict[str, Any] = {
        "dtype": dtype,
        "decode_dtype": str(getattr(env.batch, "decode_dtype", "float32")).replace("torch.", ""),
    }
    for k in fns:
        out[f"{k}_steps_per_s"] = 1.0 / min(wall[k])
        out[f"{k}_cpu_ms_per_step"] = 1000.0 * min(cpu[k])
        out[f"{k}_cpu_steps_per_s"] = 1.0 / min(cpu[k])
    rc, ec = min(cpu["raw"]), min(cpu["dreamenv"])
    out["gym_overhead_pct"] = 100.0 * (ec - rc) / rc
    made.close()
    return out


def bench_vector(
    wm,
    n: int,
    decode: bool,
    steps: int,
    warmup: int,
    dtype: str,
    decode_dtype: str,
    shards: int | str = 1,
) -> tuple[float, float]:
    """``(wall, CPU-time)`` env steps/s of DreamVectorEnv with N envs."""
    from lol_dreamer.envs.dream_vector import DreamVectorEnv

    kw = supported(DreamVectorEnv, dtype=dtype, decode_dtype=decode_dtype, shards=shards)
    env = DreamVectorEnv(n, world_model=wm, decode=decode, **kw)
    env.reset(seed=0)
    actions = np.tile(np.array([18, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64), (n, 1))
    wall = time_loop(lambda: env.step(actions), steps, warmup, wm.device)
    cpu = time_loop(lambda: env.step(actions), steps, 0, wm.device, cpu_time=True)
    return n / wall, n / cpu


def bench_torchrl(
    wm,
    n: int,
    decode: bool,
    steps: int,
    warmup: int,
    dtype: str,
    decode_dtype: str,
    shards: int | str = 1,
) -> tuple[float, float]:
    """``(wall, CPU-time)`` env steps/s of the native TorchRL env with N envs (``step`` +
    ``step_mdp``, as a collector does)."""
    from torchrl.envs.utils import step_mdp

    from lol_dreamer.envs.torchrl_env import DreamTorchEnv

    kw = supported(DreamTorchEnv, dtype=dtype, decode_dtype=decode_dtype, shards=shards)
    env = DreamTorchEnv(world_model=wm, num_envs=n, decode=decode, **kw)
    env.set_seed(0)
    td = env.reset()
    td["action", "move"] = torch.full((n,), 18, dtype=torch.long, device=wm.device)
    td["action", "keys"] = torch.zeros(n, 8, dtype=torch.int8, device=wm.device)
    holder = {"td": td}

    def one() -> None:
        out = env.step(holder["td"])
        nxt = step_mdp(out, keep_other=True, exclude_action=False)
        holder["td"] = nxt

    wall = time_loop(one, steps, warmup, wm.device)
    return n / wall, n / time_loop(one, steps, 0, wm.device, cpu_time=True)


def bench_memory(wm, steps: int, every: int, decode_dtype: str = "auto") -> dict[str, Any]:
    """RSS while DreamEnv runs ``steps`` steps (no reset): growth between the first and last quarter."""
    from tqdm import tqdm

    from lol_dreamer.envs.dream import DreamEnv

    env = DreamEnv(
        world_model=wm, torch_threads=None, **supported(DreamEnv, decode_dtype=decode_dtype)
    )
    env.reset(seed=0)
    action = np.array([18, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64)
    samples = []
    for t in tqdm(range(steps), desc="memory run", mininterval=10):
        env.step(action)
        if t % every == 0 or t == steps - 1:
            samples.append((t, rss_mib()))
    q = max(len(samples) // 4, 1)
    first = float(np.mean([m for _, m in samples[q : 2 * q]]))  # skip allocator warm-up
    last = float(np.mean([m for _, m in samples[-q:]]))
    return {
        "steps": steps,
        "rss_first_mib": first,
        "rss_last_mib": last,
        "rss_growth_mib": last - first,
        "samples": samples,
    }


def run_batched(wm, args: argparse.Namespace) -> dict[str, Any]:
    """Vector and TorchRL env steps/s at every N and dynamics dtype, with and without decoding, and
    the batching gain.

    The gain compares like with like: the same env kind and decode setting, each N at its best
    dynamics dtype among ``--dtypes``; once per CPU second of this process (all its threads) and
    once per wall second (what parallel shards, ``--shards``, buy).
    """
    rows = []
    kinds = [
        (k, f) for k, f in (("vector", bench_vector), ("torchrl", bench_torchrl)) if k in args.envs
    ]
    decodes = [d == "on" for d in args.decode]
    for kind, fn in kinds:
        for decode in decodes:
            for n in args.ns:
                for dtype in args.dtypes:
                    steps = max(3, args.steps // max(1, n // 8))
                    shards = args.shards if n > 1 else 1
                    wall, cpu = fn(
                        wm, n, decode, steps, min(args.warmup, steps), dtype, args.decode_dtype,
                        shards,
                    )  # fmt: skip
                    rows.append(
                        {
                            "env": kind,
                            "decode": decode,
                            "n": n,
                            "dtype": dtype,
                            "shards": shards,
                            "env_steps_per_s": wall,
                            "env_steps_per_cpu_s": cpu,
                        }
                    )
                    print(
                        f"  {kind:8s} decode={'on ' if decode else 'off'} N={n:<4d} {dtype:9s} "
                        f"{cpu:10.1f} env steps per CPU s ({wall:.1f} per wall s)",
                        flush=True,
                    )
    lo, hi = min(args.ns), max(args.ns)
    gains: dict[str, float] = {}
    clocks = (
        ("env_steps_per_cpu_s", "CPU second", ""),
        ("env_steps_per_s", "wall second", "_wall"),
    )
    for key, unit, suffix in clocks:
        table = {}
        for kind, _ in kinds:
            for decode in decodes:
                name = f"{kind}_decode_{'on' if decode else 'off'}"
                best: dict[int, tuple[float, str]] = {}
                for x in rows:
                    if x["env"] == kind and x["decode"] == decode:
                        cur = best.get(x["n"], (0.0, ""))
                        if x[key] > cur[0]:
                            best[x["n"]] = (x[key], x["dtype"])
                table[name] = best
                gains[name + suffix] = best[hi][0] / best[lo][0]
        print(
            f"\n{'env':10s} {'decode':7s} "
            + " ".join(f"N={n:<16d}" for n in args.ns)
            + f" gain N={hi}/N={lo} (env steps per {unit}, best dtype)"
        )
        for name, r in table.items():
            kind, _, dec = name.split("_")
            print(
                f"{kind:10s} {dec:7s} "
                + " ".join(f"{r[n][0]:<7.1f} {r[n][1]:<9s}" for n in args.ns)
                + f" {gains[name + suffix]:.1f}x"
            )
    return {"batched": rows, "batching_gain": {"n_high": hi, "n_low": lo, **gains}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--world-model",
        default=None,
        help="a trained world-model folder (default: random init of --preset)",
    )
    p.add_argument(
        "--preset",
        default="nano",
        help="tokenizer + dynamics preset for the random model (default %(default)s)",
    )
    p.add_argument(
        "--arch",
        default="transformer",
        choices=("transformer", "cnn"),
        help="tokenizer of the random model (default %(default)s)",
    )
    p.add_argument(
        "--res", type=int, default=128, help="frame side of the random model (default %(default)s)"
    )
    p.add_argument(
        "--context",
        type=int,
        default=16,
        help="context length of the random model (default %(default)s)",
    )
    p.add_argument(
        "--ns", type=int, nargs="+", default=[1, 8, 64], help="batch sizes (default %(default)s)"
    )
    p.add_argument(
        "--steps", type=int, default=30, help="timed steps per measurement (default %(default)s)"
    )
    p.add_argument(
        "--warmup", type=int, default=5, help="untimed steps first (default %(default)s)"
    )
    p.add_argument(
        "--memory-steps",
        type=int,
        default=10000,
        help="DreamEnv steps of the memory run, 0 = skip (default %(default)s)",
    )
    p.add_argument(
        "--memory-every",
        type=int,
        default=250,
        help="RSS sampling period in steps (default %(default)s)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument(
        "--batch1-dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="dynamics dtype of the batch-1 rows (default %(default)s)",
    )
    p.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32"],
        choices=("float32", "bfloat16"),
        help="dynamics dtypes of the batched rows; the gain uses each N's best (default %(default)s)",
    )
    p.add_argument(
        "--decode-dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="decoder dtype of every env (default %(default)s: bf16 for a CNN tokenizer on a CPU "
        "with native bf16)",
    )
    p.add_argument(
        "--decode",
        nargs="+",
        default=["on", "off"],
        choices=("on", "off"),
        help="batched rows with decoding on and/or off (default: both)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    p.add_argument(
        "--parts",
        nargs="+",
        default=["batch1", "batched", "memory"],
        choices=("batch1", "batched", "memory"),
        help="what to run (default: all)",
    )
    p.add_argument(
        "--envs",
        nargs="+",
        default=["vector", "torchrl"],
        choices=("vector", "torchrl"),
        help="batched envs to time (default: both)",
    )
    p.add_argument(
        "--shards",
        default="1",
        help="shards of the batched envs: an int or 'auto' (one per core, ≥ 16 dreams each); each "
        "shard steps on its own core with one thread (default %(default)s: one batch)",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    args.shards = args.shards if args.shards == "auto" else int(args.shards)

    import lol_dreamer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.world_model or build_world_model(
            Path(tmp) / "wm", args.preset, args.res, args.context, arch=args.arch
        )
        wm = lol_dreamer.load_world_model(path, device=args.device)
    results: dict[str, Any] = {
        "model": args.world_model
        or f"random-init {args.preset} ({args.arch} tokenizer) @ {args.res}px, context {args.context}",
        "device": args.device,
        "threads": args.threads,
        "k": wm.k,
        "command": " ".join(sys.argv),
    }
    print(
        f"world model: {results['model']} (n_z={wm.n_z}, d_z={wm.d_z}, K={wm.k}); device {args.device}, {args.threads} thread(s)"
    )
    if "batch1" in args.parts:
        results["batch1"] = b1 = bench_raw_and_dreamenv(
            wm, args.steps, args.warmup, args.batch1_dtype, args.decode_dtype
        )
        print(
            f"\nbatch 1, decode on (dynamics {b1['dtype']}, decoder {b1['decode_dtype']}):\n"
            f"{'path':22s} {'CPU ms/step':>12s} {'steps/CPU s':>12s} {'steps/wall s':>13s}"
        )
        for k, label in (
            ("raw", "raw sampler+decoder"),
            ("dreamenv", "DreamEnv"),
            ("gym_make", 'gym.make("LoLDream-v0")'),
        ):
            print(
                f"{label:22s} {b1[k + '_cpu_ms_per_step']:12.1f} {b1[k + '_cpu_steps_per_s']:12.1f} "
                f"{b1[k + '_steps_per_s']:13.1f}"
            )
        print(f"gym overhead {b1['gym_overhead_pct']:+.1f}% (CPU time, DreamEnv over raw)")
    if "batched" in args.parts:
        results.update(run_batched(wm, args))
    if "memory" in args.parts and args.memory_steps:
        m = bench_memory(wm, args.memory_steps, args.memory_every, args.decode_dtype)
        results["memory"] = m
        print(
            f"\nmemory over {m['steps']} DreamEnv steps: RSS {m['rss_first_mib']:.1f} MiB (2nd quarter) "
            f"→ {m['rss_last_mib']:.1f} MiB (last quarter), growth {m['rss_growth_mib']:+.1f} MiB"
        )
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
