"""Cost of the TorchRL collector over driving the batched dream by hand (phase-3 imagined rollouts).

Both ways run the same rollouts (same contexts, dream noise and action draws, checked bit for bit):

- ``direct``: a Python loop over ``DreamBatch.step`` with the policy head sampling on the agent
  features and the continue head read each step (no TensorDicts);
- ``env.rollout``: TorchRL's ``EnvBase.rollout`` on the imagination env with the policy module;
- ``collector``: ``torchrl.collectors.Collector`` (``frames_per_batch = N·H``, reset at each
  iteration), exactly what ``lol-dreamer train imagine`` uses.

A second table repeats the three ways with the dynamics step replaced by a cached result, which
isolates the per-step cost of the Python/TensorDict machinery (what stays when the model is fast,
e.g. on a GPU).

Without ``--agent`` a random-weight agent world model of the chosen presets is written to a temporary
folder (random weights cost the same as trained ones).

Example:
    python benchmarks/bench_collector.py --preset nano --batch 16 --horizon 32 --reps 3
    python benchmarks/bench_collector.py --agent runs/bc --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def make_random_agent(out: Path, preset: str, res: int, n_starts: int, context: int) -> Path:
    """Write a random-weight agent world model (tokenizer ``test``, dynamics + heads ``preset``)."""
    from lol_dreamer.actions import ACTION_NVEC
    from lol_dreamer.models import build_tokenizer
    from lol_dreamer.models.agent_model import AgentWorldModel
    from lol_dreamer.models.dynamics import DynamicsConfig
    from lol_dreamer.models.heads import HeadsConfig
    from lol_dreamer.models.tokenizer_config import TokenizerConfig
    from lol_dreamer.world_model import save_world_model

    torch.manual_seed(0)
    tcfg = TokenizerConfig.preset("test", res=res)
    tok = build_tokenizer(tcfg.to_dict()).eval()
    dcfg = DynamicsConfig.preset(preset, n_z=tcfg.n_z, d_z=tcfg.d_z, context=context, n_agent=1)
    model = AgentWorldModel(
        dcfg, HeadsConfig.preset(preset if preset != "test" else "test", dim=dcfg.dim)
    )
    with torch.no_grad():
        for head in (model.heads.policy, model.heads.reward, model.heads.cont):
            head.out.weight.normal_(0.0, 0.1)
        model.heads.cont.out.bias.fill_(3.0)
    frames = torch.rand(n_starts, context, 3, res, res)
    with torch.no_grad():
        latents = tok.encode(frames)
    actions = torch.cat([torch.randint(0, int(k), (n_starts, context, 1)) for k in ACTION_NVEC], -1)
    starts = {
        "latents": latents.half(),
        "actions": actions,
        "tasks": torch.zeros(n_starts, dtype=torch.long),
    }
    clips = {
        "frames": (frames[:1] * 255).byte().permute(0, 1, 3, 4, 2).contiguous(),
        **{k: v[:1] for k, v in starts.items()},
    }
    return save_world_model(
        out, model=model, model_config=model.config, tokenizer=tok, tokenizer_config=tcfg.to_dict(),
        starts=starts, clips=clips, kind="agent", context=context,
    )  # fmt: skip


def build(agent: Path, batch: int, horizon: int, device: str):
    from lol_dreamer.agents.actor import ImagineActor
    from lol_dreamer.agents.imagine_env import (
        ImaginationEnv,
        ImaginationRollouts,
        StartClipContexts,
    )
    from lol_dreamer.world_model import load_world_model

    wm = load_world_model(agent, device=device)
    env = ImaginationEnv(wm, StartClipContexts(wm, batch), task=0)
    actor = ImagineActor(wm.heads, mtp_distance=0)
    return wm, env, actor, ImaginationRollouts(env, actor, horizon)


def stub_model(env) -> None:
    """Replace the dream's model step by a cached result (framework cost only)."""
    dream = env.dream
    cached = dream.step(torch.zeros(env.num_envs, 9, dtype=torch.long, device=env.device))

    def step(actions: torch.Tensor, decode: bool | None = None):
        dream.latent, dream.agent_features = cached.latent, cached.agent_features
        return cached

    dream.step = step


def time_ways(ways: dict, reps: int, device: str) -> dict[str, list[float]]:
    """Median-ready timings: every way runs rollout ``rep`` in turn (the first round warms up)."""
    times: dict[str, list[float]] = {k: [] for k in ways}
    for rep in range(reps + 1):
        for name, fn in ways.items():
            _sync(device)
            t0 = time.perf_counter()
            fn(rep + 1)
            _sync(device)
            if rep:
                times[name].append(time.perf_counter() - t0)
    return times


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--agent", default=None, help="agent world-model folder (default: random weights)"
    )
    ap.add_argument(
        "--preset",
        default="nano",
        help="dynamics/heads preset of the random model (default %(default)s)",
    )
    ap.add_argument(
        "--res",
        type=int,
        default=32,
        help="frame side of the random model's tokenizer (default %(default)s)",
    )
    ap.add_argument("--batch", type=int, default=16, help="rollouts N (default %(default)s)")
    ap.add_argument(
        "--horizon", type=int, default=32, help="steps per rollout H (default %(default)s)"
    )
    ap.add_argument(
        "--reps", type=int, default=3, help="timed rollouts per way (default %(default)s)"
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default %(default)s)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        agent = (
            Path(args.agent)
            if args.agent
            else make_random_agent(Path(tmp) / "agent", args.preset, args.res, 8, 8)
        )
        wm, env, actor, rollouts = build(agent, args.batch, args.horizon, args.device)
        policy = actor.module

        def direct(step: int) -> None:
            rollouts.direct(step)

        def collector(step: int) -> None:
            rollouts.sample(step)

        def env_rollout(step: int) -> None:
            rollouts.prepare(step)
            with torch.no_grad():
                env.rollout(args.horizon, policy, auto_reset=True, break_when_any_done=False)

        # same rollouts both ways
        a, b = rollouts.sample(0), rollouts.direct(0)
        same = torch.equal(a["agent_features"], b["agent_features"]) and torch.equal(
            a["next", "reward"][..., 0], b["reward"]
        )
        ways = {"direct": direct, "env.rollout": env_rollout, "collector": collector}
        times = time_ways(ways, args.reps, args.device)
        stub_model(env)
        stubbed = time_ways(ways, args.reps, args.device)
        rollouts.close()

    dim = int(wm.dynamics.cfg.dim)
    print(f"imagined rollouts: N={args.batch}, H={args.horizon}, dynamics width {dim}, K={env.dream.k}, "
          f"{args.device}, {args.threads} thread(s); best of {args.reps}; same rollouts both ways: {same}")  # fmt: skip
    result = {"meta": {"batch": args.batch, "horizon": args.horizon, "dim": dim, "device": args.device,
                       "threads": args.threads, "reps": args.reps, "same_rollouts": same,
                       "agent": args.agent or f"random {args.preset}"}}  # fmt: skip
    for title, key, ts in (
        ("full model", "rows", times),
        ("model step stubbed (framework only)", "stubbed", stubbed),
    ):
        # best of the repetitions: on a shared machine the minimum is the least disturbed estimate
        base = min(ts["direct"])
        rows = []
        for name, t in ts.items():
            best = min(t)
            rows.append({"way": name, "rollout_s": best, "median_s": statistics.median(t),
                         "ms_per_step": 1e3 * best / args.horizon,
                         "imagined_steps_per_s": args.batch * args.horizon / best,
                         "overhead_pct": 100 * (best / base - 1)})  # fmt: skip
        result[key] = rows
        print(f"\n{title}")
        print(f"{'way':<12} {'s/rollout':>10} {'ms/step':>8} {'steps/s':>9} {'overhead':>9}")
        for r in rows:
            print(f"{r['way']:<12} {r['rollout_s']:>10.3f} {r['ms_per_step']:>8.2f} "
                  f"{r['imagined_steps_per_s']:>9.1f} {r['overhead_pct']:>8.1f}%")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
