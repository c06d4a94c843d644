"""Agent-side costs: phase-2 head loss and PMPO loss (forward + backward), and real-game acting speed.

Prints a table with units and optionally writes JSON.

    python benchmarks/bench_agent.py --presets nano small --batch 16 --horizon 32
    python benchmarks/bench_agent.py --agent runs/bc --steps 200     # acting from frames
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tensordict import TensorDict


def _time(fn, reps: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def bench_losses(preset: str, b: int, horizon: int, reps: int) -> dict:
    from lol_dreamer.agents.pmpo import PMPOLoss
    from lol_dreamer.models.heads import AgentHeads, HeadsConfig
    from lol_dreamer.objectives.agent_loss import agent_head_loss

    cfg = HeadsConfig.preset(preset)
    heads = AgentHeads(cfg)
    with torch.no_grad():
        heads.policy.out.weight.normal_(0, 0.1)
    h = torch.randn(b, horizon, cfg.dim)
    act = torch.zeros(b, horizon, 9, dtype=torch.long)
    rew, term = torch.randn(b, horizon), torch.zeros(b, horizon, dtype=torch.bool)
    t_p2 = _time(lambda: sum(agent_head_loss(heads, h, act, rew, term).values()).backward(), reps)
    loss = PMPOLoss(heads)
    f = torch.randn(b, horizon + 1, cfg.dim)
    td = TensorDict(
        {
            "features": f[:, :-1],
            "action": act,
            "next": {"features": f[:, 1:], "reward": rew, "continue": torch.ones(b, horizon)},
        },
        batch_size=[b, horizon],
    )

    def pmpo() -> None:
        out = loss(td)
        (out["loss_policy"] + out["loss_kl"] + out["loss_value"]).backward()

    t_pm = _time(pmpo, reps)
    return {
        "preset": preset,
        "dim": cfg.dim,
        "phase2_loss_ms": 1e3 * t_p2,
        "pmpo_loss_ms": 1e3 * t_pm,
    }


def bench_acting(agent: str | None, steps: int, res: int) -> list[dict]:
    import gymnasium as gym

    import lol_dreamer  # noqa: F401
    from lol_dreamer.agents.evaluate import PolicyRunner, RandomRunner, ScriptedRunner

    runners = [RandomRunner(), ScriptedRunner("farm")]
    if agent:
        from lol_dreamer.policy import load_policy

        pol = load_policy(agent, task="farm")
        res = pol.features.wm.res
        runners.append(PolicyRunner(pol, "agent"))
    rows = []
    for r in runners:
        env = gym.make("LoLLane-v0", task="farm", max_steps=steps, res=res)
        frame, _ = env.reset(seed=0)
        r.reset(env, frame, 0)
        t = time.perf_counter()
        n = 0
        while True:
            frame, _, term, trunc, _ = env.step(r.act(frame))
            n += 1
            if term or trunc:
                break
        rows.append({"agent": r.name, "res": res, "steps_per_s": n / (time.perf_counter() - t)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--presets", nargs="+", default=["nano", "small"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--horizon", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--agent", default=None, help="agent run folder to time acting from frames")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    losses = [bench_losses(p, args.batch, args.horizon, args.reps) for p in args.presets]
    print(
        f"losses, forward + backward, batch {args.batch} × {args.horizon} steps, {args.threads} thread(s)"
    )
    print(f"{'preset':<8} {'dim':>5} {'phase-2 loss ms':>16} {'PMPO loss ms':>13}")
    for r in losses:
        print(
            f"{r['preset']:<8} {r['dim']:>5} {r['phase2_loss_ms']:>16.1f} {r['pmpo_loss_ms']:>13.1f}"
        )
    acting = bench_acting(args.agent, args.steps, args.res)
    print("\nacting in LoLLane-v0 (env step + render + agent), task farm")
    print(f"{'agent':<10} {'res':>4} {'steps/s':>9}")
    for r in acting:
        print(f"{r['agent']:<10} {r['res']:>4} {r['steps_per_s']:>9.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"losses": losses, "acting": acting, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
