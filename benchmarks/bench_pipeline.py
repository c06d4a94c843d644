"""What each pipeline stage costs at a given preset, to size a default-model run's step counts.

Runs ``lol-dreamer pipeline`` (every stage) with a few optimiser steps per trainer and measures, per
trainer, the CPU seconds of each optimiser step (``time.process_time`` around the shared loop's
step, so other jobs on a busy machine do not inflate it the way wall time is inflated), per stage
the total wall and CPU seconds, and the tokenizer's CPU seconds per encoded frame. With one torch
thread, CPU seconds ≈ the wall seconds an idle core needs. Finally it prints the estimated wall time
of a full recipe (``--recipe``, the pipeline's nano defaults unless given).

    python benchmarks/bench_pipeline.py --preset nano --res 128 --episodes 6 --max-steps 300 --steps 6 --threads 1 --json bench_pipeline.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="nano")
    p.add_argument("--res", type=int, default=128)
    p.add_argument("--episodes", type=int, default=6)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--steps", type=int, default=6, help="optimiser steps of each trainer")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="pipeline folder (default: a temporary one)")
    p.add_argument("--json", default=None, help="write the measurements here")
    p.add_argument(
        "--recipe", default=None, help="JSON of settings to estimate (default: the nano defaults)"
    )
    args = p.parse_args()

    import torch

    from lol_dreamer.pipeline import run_pipeline
    from lol_dreamer.pipeline_config import FULL, PipelineConfig
    from lol_dreamer.training import trainer as trainer_mod

    torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_pipeline_")) / "RUN"
    per_step: dict[str, list[float]] = {}
    original = trainer_mod.Trainer._train_step

    def timed(self, step):
        c0 = time.process_time()
        row = original(self, step)
        per_step.setdefault(self.run_dir.name if self.run_dir else "?", []).append(
            time.process_time() - c0
        )
        return row

    stage_cpu: dict[str, float] = {}
    import lol_dreamer.pipeline_stages as stages_mod

    def wrap(stage):
        def run(a, paths, s):
            c0 = time.process_time()
            try:
                return stage.run(a, paths, s)
            finally:
                stage_cpu[stage.name] = time.process_time() - c0

        return stages_mod.Stage(stage.name, stage.folder, stage.needs, stage.args, run, stage.what)

    import lol_dreamer.pipeline as pipeline_mod

    pipeline_mod.STAGES = tuple(wrap(s) for s in stages_mod.STAGES)
    trainer_mod.Trainer._train_step = timed
    cfg = PipelineConfig(
        out=str(out), preset=args.preset, res=args.res, episodes=args.episodes,
        max_steps=args.max_steps, collect_task="farm", steps_tokenizer=args.steps,
        steps_dynamics=args.steps, steps_agent=args.steps, steps_imagine=args.steps,
        lpips_weight=0.0, eval_seeds=2, eval_episodes=1, eval_max_steps=50, wm_eval_episodes=1,
        save_every=10**6,
    )  # fmt: skip
    try:
        rec = run_pipeline(cfg, quiet=True)
    finally:
        trainer_mod.Trainer._train_step = original
    frames = rec["stages"]["tokenize"]["metrics"]["frames"]
    settings = rec["settings"]
    rows = []
    for name in rec["stages"]:
        st = rec["stages"][name]
        rows.append({"stage": name, "wall_s": st["seconds"], "cpu_s": stage_cpu.get(name)})
    step_cpu = {k: statistics.median(v[1:] or v) for k, v in per_step.items()}
    recipe = dict(FULL, **(json.loads(args.recipe) if args.recipe else {}))
    folder = {"steps_tokenizer": "tokenizer", "steps_dynamics": "world_model", "steps_agent": "bc",
              "steps_imagine": "pmpo"}  # fmt: skip
    batch = {"tokenizer": "batch_tokenizer", "world_model": "batch_dynamics", "bc": "batch_agent",
             "pmpo": "batch_imagine"}  # fmt: skip
    est = {}
    for key, run in folder.items():
        scale = recipe[batch[run]] / settings[batch[run]]  # step cost ∝ batch size
        est[key] = recipe[key] * step_cpu[run] * scale
    est["tokenize"] = stage_cpu["tokenize"] / frames * recipe["episodes"] * recipe["max_steps"]
    est["collect"] = (
        stage_cpu["collect"]
        / (settings["episodes"] * settings["max_steps"])
        * (recipe["episodes"] * recipe["max_steps"])
    )
    for name in ("eval-tokenizer", "eval-world-model", "eval-agent"):
        est[name] = stage_cpu[name]  # lower bounds: the recipe evaluates more
    print(
        f"{args.preset} at {args.res} px, {args.threads} torch thread(s); CPU s ≈ idle-core wall s"
    )
    print(f"{'stage':<18}{'wall s':>10}{'CPU s':>10}")
    for r in rows:
        print(f"{r['stage']:<18}{r['wall_s']:>10.1f}{(r['cpu_s'] or 0):>10.1f}")
    print(f"\n{'trainer':<14}{'batch':>6}{'CPU s/step':>12}")
    for run, s in step_cpu.items():
        print(f"{run:<14}{settings[batch[run]]:>6}{s:>12.2f}")
    print(f"tokenize: {stage_cpu['tokenize'] / frames * 1000:.1f} CPU ms/frame")
    print(
        "\nestimated CPU seconds of the recipe",
        json.dumps({k: recipe[k] for k in (*folder, *batch.values(), "episodes", "max_steps")}),
    )
    for k, v in est.items():
        print(f"  {k:<18}{v:>9.0f} s")
    print(f"  {'total':<18}{sum(est.values()):>9.0f} s = {sum(est.values()) / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps({"stages": rows, "step_cpu_s": step_cpu,
                                               "tokenize_cpu_s_per_frame": stage_cpu["tokenize"] / frames,
                                               "recipe": recipe, "estimate_s": est}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
