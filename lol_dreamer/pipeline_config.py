"""Settings of ``lol-dreamer pipeline``: one dataclass, resolved against full-size or ``--quick`` defaults.

Every field left at ``None`` takes its value from :data:`FULL` (the nano default-model recipe) or,
with ``quick=True``, from :data:`QUICK` (the ``test`` presets and tiny step counts, a few minutes on
two CPU cores). :meth:`PipelineConfig.resolved` returns the complete settings; the stages read only
those, so a stage's recorded arguments never depend on which defaults table filled them.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, fields
from typing import Any

# The default-model recipe (nano presets, 128 px), sized for about 100 minutes on two CPU cores
# with --threads 1: measured single-thread costs per optimiser step at nano size are tokenizer 2.8 s
# (batch 8 × 4 frames), dynamics 1.4 s, phase 2 1.1 s (batch 8), phase 3 4.1 s (16 rollouts × 32
# steps), tokenization 14 ms per frame (benchmarks/bench_pipeline.py, benchmarks/RESULTS.md).
FULL: dict[str, Any] = {
    "preset": "nano",
    "arch_tokenizer": "transformer",
    "res": 128,
    "episodes": 32,
    "max_steps": 1000,
    "collect_task": "mixed",
    "steps_tokenizer": 700,
    "steps_dynamics": 1200,
    # Short CPU budgets: with step sizes uniform over the 7 levels only 1/7 of the frames get the
    # flow term, and a nano model had not learned to read its context after 400 steps; with half
    # the frames on the flow term it had after 300 (benchmarks/RESULTS.md, "Learning to use the
    # context").
    "flow_frac": 0.5,
    "lr_dynamics": 1e-3,
    # An EMA of the dynamics weights gives cleaner samples than the last iterate at lr 1e-3.
    "ema_dynamics": 0.999,
    # Phase 2 fine-tunes the shared transformer; with the video term at weight 1 the BC, reward and
    # continue terms (summed over the MTP distances) swamp it and the dynamics degrade (held-out flow
    # loss 0.05 → 0.23 in 120 steps); at 20 it stays at its phase-1b level while BC still learns
    # (benchmarks/RESULTS.md, "The bundled default model").
    "video_weight": 20.0,
    # Phase 2 without an EMA moved the published EMA weights enough to cost the dream ~1 dB and
    # 10 coherent frames at a flat held-out loss; with the transformer frozen the dream is exactly
    # the phase-1b model's and only the agent tokens, task embedding and heads learn
    # (benchmarks/RESULTS.md, "Phase 2 with a frozen transformer").
    "trunk_lr_scale": 0.0,
    "steps_agent": 600,
    "steps_imagine": 160,
    "batch_tokenizer": 8,
    "batch_dynamics": 8,
    "batch_agent": 8,
    "batch_imagine": 16,
    "horizon": 32,
    "lpips_weight": 0.2,
    "save_every": 100,
    "eval_episodes": 2,
    "eval_seeds": 3,
    "eval_max_steps": 1000,
    "wm_eval_episodes": 8,
}

# --quick: everything tiny, so the whole pipeline runs in minutes on two CPU cores (the test).
QUICK: dict[str, Any] = {
    "preset": "test",
    "arch_tokenizer": "transformer",
    "res": 32,
    "episodes": 4,
    "max_steps": 160,  # farm: the scripted player's first last hits come after ~90-150 steps
    "collect_task": None,  # = --task: phase 2 needs episodes of the task with rewards in them
    "steps_tokenizer": 16,
    "steps_dynamics": 12,
    "flow_frac": 0.5,
    "ema_dynamics": 0.0,
    "video_weight": 20.0,
    "trunk_lr_scale": 0.0,
    "steps_agent": 8,
    "steps_imagine": 2,
    "batch_tokenizer": 2,
    "batch_dynamics": 2,
    "batch_agent": 2,
    "batch_imagine": 2,
    "horizon": 4,
    "lpips_weight": 0.0,
    "save_every": 8,
    "eval_episodes": 1,
    "eval_seeds": 2,
    "eval_max_steps": 20,
    "wm_eval_episodes": 1,
}


@dataclass
class PipelineConfig:
    """What ``lol-dreamer pipeline`` runs (flags of the same names; ``None`` = the default table's).

    Attributes:
        out: the pipeline folder RUN (``RUN/data``, ``RUN/tokenizer``, ``RUN/world_model``,
            ``RUN/bc``, ``RUN/pmpo``, ``RUN/eval``, ``RUN/pipeline.json``).
        data: start from this existing dataset instead of collecting (latents are written into it).
        tokenizer: start from this trained tokenizer run instead of training one (it is checked
            and used in place; its weights' hash is recorded).
        world_model: start from this trained phase-1b run (`train dynamics`) instead of training
            the dynamics; it must have been trained on latents of the pipeline's tokenizer (its
            recorded tokenizer hash is checked). Used in place; its weights' hash is recorded.
        quick: the ``test`` presets and tiny step counts (minutes on two CPU cores).
        task: the agent's task (``farm`` | ``fight`` | ``push``).
        preset: model size preset of every component.
        res: LaneSim frame side in pixels.
        episodes, max_steps, collect_task, workers: the LaneSim collection.
        arch_tokenizer: ``transformer`` (SPEC §5) or ``cnn`` (the baseline with the same interface).
        steps_*, batch_*: optimiser steps and batch sizes of each trainer.
        lr_*: peak learning rate of each trainer (None = that trainer's own default).
        flow_frac: probability of the flow term per frame in the dynamics trainer (None = step
            sizes uniform, as in DreamerV4; see ``lol-dreamer train dynamics --flow-frac``).
        ema_dynamics: EMA decay of the dynamics weights (the EMA is what the run publishes);
            0 = no EMA.
        video_weight: weight of the shortcut (video) term in phase 2.
        trunk_lr_scale: phase-2 learning-rate multiplier of the pre-trained transformer (0 =
            frozen: the dream stays the phase-1b model's; 1 = fine-tune everything).
        precision: autocast precision of every trainer (``auto``, ``fp32``, ``bf16``; None = the
            trainers' default, ``auto``). bf16 on a CPU with native bf16 is ~1.8× faster per step.
        horizon: imagined steps per rollout in phase 3.
        lpips_weight, lpips_weights: the tokenizer's LPIPS term and backbone weights file.
        save_every: checkpoint interval of every trainer (what an interrupted stage resumes from).
        eval_*: real-LaneSim agent evaluation (seeds × episodes, step cap);
            wm_eval_episodes: held-out episodes of the world-model evaluation.
        seed: seed of collection and every trainer.
        device: ``auto``, ``cpu``, ``cuda``…
        threads: torch CPU threads of every stage (None = torch's default, one per core). On a
            CPU shared with other jobs, 1 is often much faster than oversubscribed threads.
    """

    out: str
    data: str | None = None
    tokenizer: str | None = None
    world_model: str | None = None
    quick: bool = False
    task: str = "farm"
    preset: str | None = None
    res: int | None = None
    episodes: int | None = None
    max_steps: int | None = None
    collect_task: str | None = None
    workers: int = 1
    arch_tokenizer: str | None = None
    steps_tokenizer: int | None = None
    steps_dynamics: int | None = None
    steps_agent: int | None = None
    steps_imagine: int | None = None
    batch_tokenizer: int | None = None
    batch_dynamics: int | None = None
    batch_agent: int | None = None
    batch_imagine: int | None = None
    lr_tokenizer: float | None = None
    lr_dynamics: float | None = None
    lr_agent: float | None = None
    lr_imagine: float | None = None
    flow_frac: float | None = None
    ema_dynamics: float | None = None
    video_weight: float | None = None
    trunk_lr_scale: float | None = None
    precision: str | None = None
    horizon: int | None = None
    lpips_weight: float | None = None
    lpips_weights: str | None = None
    save_every: int | None = None
    eval_episodes: int | None = None
    eval_seeds: int | None = None
    eval_max_steps: int | None = None
    wm_eval_episodes: int | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

    def resolved(self) -> dict[str, Any]:
        """Every setting with the defaults filled in (JSON-safe)."""
        table = QUICK if self.quick else FULL
        out = asdict(self)
        for k, v in table.items():
            if out.get(k) is None:
                out[k] = v
        if out["collect_task"] is None:
            out["collect_task"] = self.task
        return out

    def command(self) -> str:
        """The ``lol-dreamer pipeline`` command line that reproduces these settings."""
        parts = ["lol-dreamer", "pipeline", "--out", self.out]
        for f in fields(self):
            if f.name == "out":
                continue
            v = getattr(self, f.name)
            if (
                v is None
                or v is False
                or (f.name in _FLAG_DEFAULTS and v == _FLAG_DEFAULTS[f.name])
            ):
                continue
            flag = "--" + f.name.replace("_", "-")
            parts += [flag] if v is True else [flag, str(v)]
        return " ".join(shlex.quote(p) for p in parts)


_FLAG_DEFAULTS = {"task": "farm", "workers": 1, "seed": 0, "device": "auto"}
