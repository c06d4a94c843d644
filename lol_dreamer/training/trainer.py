"""The one training loop every phase uses.

A phase supplies a model, an objective and a batch source; the loop supplies AdamW with warmup +
cosine, gradient clipping, EMA weights, bf16 autocast on CUDA, optional ``torch.compile`` and
gradient checkpointing, periodic held-out evaluation, atomic run-folder checkpoints with exact
resume, data parallelism under ``torchrun``, NaN/Inf detection, a progress bar and a summary.

Contracts:

- ``objective(model, batch, step) -> LossOutput``; ``loss`` is the optimised total, ``terms`` the
  raw un-normalised terms (logged as ``loss/<name>``), ``metrics`` extra scalars (``metric/<name>``).
  An objective with ``state_dict()`` / ``load_state_dict()`` (running-RMS normalisers…) is checkpointed.
- ``data`` is ``batch_fn(step) -> dict`` or an object with ``sample(step) -> dict``; batches must be
  a deterministic function of (seed, step, rank) so resuming needs no data state (an optional
  ``state_dict()`` on the sampler is saved too).
- ``eval_fn(model, step) -> dict`` runs on rank 0 with the published (EMA when on) weights, in eval
  mode, without gradients; its scalars are logged as ``eval/<name>``.

Example:
    >>> cfg = TrainConfig(steps=100, batch_size=8, lr=1e-3)          # doctest: +SKIP
    >>> result = train(model, objective, sampler, cfg, "runs/x",       # doctest: +SKIP
    ...                run_config={"kind": "tokenizer", "model": model.config.to_dict()})
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lol_dreamer.checkpoint import load_run_config
from lol_dreamer.hardware import hardware
from lol_dreamer.io import atomic_write_json
from lol_dreamer.training import distributed as dist_utils
from lol_dreamer.training.config import (
    NonFiniteLossError,
    Objective,
    TrainConfig,
    TrainResult,
)
from lol_dreamer.training.ema import EMA
from lol_dreamer.training.prefetch import Prefetcher
from lol_dreamer.training.run_log import MetricsLog
from lol_dreamer.training.schedule import WarmupCosine
from lol_dreamer.training.state import (
    RunState,
    capture_rng,
    has_state,
    load_run_state,
    refuse_existing_run,
    restore_rng,
    save_run_state,
)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if device == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a nested dict / list / tuple to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _scalar(v: float | torch.Tensor) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU + CUDA), NumPy and Python ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _param_groups(
    params: list[nn.Parameter], weight_decay: float, lr_scale: dict[int, float]
) -> list[dict]:
    """AdamW groups: matrices decay, norm gains and biases do not; one group per LR scale."""
    groups = []
    for scale in sorted({lr_scale.get(id(p), 1.0) for p in params}, reverse=True):
        mine = [p for p in params if lr_scale.get(id(p), 1.0) == scale]
        for decays, wd in ((True, weight_decay), (False, 0.0)):
            chosen = [p for p in mine if (p.ndim >= 2) == decays]
            groups.append({"params": chosen, "weight_decay": wd, "lr_scale": scale})
    return groups


def _split_params(
    params: Iterable[nn.Parameter] | Iterable[dict] | None,
) -> tuple[list[nn.Parameter] | None, dict[int, float]]:
    """``params`` as given to :class:`Trainer` → (the parameters, ``{id: lr_scale}``)."""
    if params is None:
        return None, {}
    flat: list[nn.Parameter] = []
    scale: dict[int, float] = {}
    for item in params:
        if isinstance(item, dict):
            s = float(item.get("lr_scale", 1.0))
            if not s > 0:
                raise ValueError(
                    f"lr_scale must be > 0, got {s}; leave frozen parameters out of params instead"
                )
            group = list(item["params"])
            flat += group
            scale.update({id(p): s for p in group})
        else:
            flat.append(item)
    return flat, scale


def _enable_grad_checkpointing(model: nn.Module) -> None:
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    elif hasattr(model, "grad_checkpointing"):
        model.grad_checkpointing = True
    else:
        raise ValueError(
            f"{type(model).__name__} does not support gradient checkpointing "
            "(no set_grad_checkpointing method); train without --grad-checkpointing"
        )


class _BudgetClock:
    """Fits a run into a wall-clock budget (:attr:`TrainConfig.time_limit`).

    The steps ``start + skip`` … ``start + skip + window`` time the loop (the first ``skip`` are left
    out: CUDA kernel selection and allocator warm-up make them slow); from that rate, less a safety
    margin for evaluations and checkpoints, :meth:`plan` returns the step count that fits the
    remaining budget, once. :meth:`expired` says when the budget is spent whatever the plan said.

    Args:
        limit: budget in seconds (0 = none: both methods are inert).
        start: the step the invocation started from.
        t0: ``time.perf_counter()`` at the start.
        skip: warm-up steps left out of the timing.
        window: steps timed.
        margin: fraction of the remaining budget planned for training steps.
    """

    def __init__(
        self, limit: float, start: int, t0: float, skip: int = 10, window: int = 30,
        margin: float = 0.9,
    ) -> None:  # fmt: skip
        self.limit, self.t0, self.margin = limit, t0, margin
        self.begin, self.end = start + skip, start + skip + window
        self.t_begin: float | None = None

    def plan(self, step: int, now: float) -> int | None:
        """After step ``step`` finished at ``now``: the planned total steps, or None (no new plan)."""
        if self.limit <= 0:
            return None
        if step == self.begin:
            self.t_begin = now
        if step != self.end or self.t_begin is None:
            return None
        rate = (self.end - self.begin) / max(now - self.t_begin, 1e-9)
        left = self.limit - (now - self.t0)
        return step + max(0, int(rate * left * self.margin))

    def expired(self, now: float) -> bool:
        return self.limit > 0 and now - self.t0 >= self.limit


class Trainer:
    """The shared loop; see the module docstring for the contracts. Use :func:`train` for one call.

    Args:
        model: the network (moved to the training device).
        objective: ``objective(model, batch, step) -> LossOutput``.
        data: ``batch_fn(step) -> dict`` or a sampler with ``sample(step)``.
        cfg: the optimisation settings.
        run_dir: the run folder; None trains without writing anything (tests, notebooks).
        params: the parameters to train (default: all); the others get ``requires_grad=False``.
            Items may also be groups ``{"params": [...], "lr_scale": s}``: their learning rate is
            ``s`` times the schedule's (fine-tuning a pre-trained part more gently than new parts).
        eval_fn: ``eval_fn(model, step) -> dict`` of held-out scalars.
        run_config: ``{"kind", "model", "data", …}`` for ``config.json`` (``"train"`` is added).
        resume: continue from ``run_dir/state`` (a fresh start when it holds none).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        data: Callable[[int], dict] | Any,
        cfg: TrainConfig,
        run_dir: str | Path | None = None,
        *,
        params: Iterable[nn.Parameter] | Iterable[dict] | None = None,
        eval_fn: Callable[[nn.Module, int], dict] | None = None,
        run_config: dict | None = None,
        resume: bool = False,
    ) -> None:
        self.cfg = cfg
        self.dist = dist_utils.init_distributed(cfg.device)
        self.device = resolve_device(cfg.device, self.dist.local_rank)
        self.model = model.to(self.device)
        self.objective = objective
        if callable(getattr(objective, "to", None)):
            objective.to(self.device)
        self.sampler = data
        self.batch_fn = data.sample if hasattr(data, "sample") else data
        if not callable(self.batch_fn):
            raise TypeError(
                "data must be batch_fn(step) -> dict or an object with sample(step) -> dict"
            )
        self.eval_fn = eval_fn
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_config = dict(run_config or {})
        self.resume = resume
        self.writes = self.run_dir is not None and self.dist.is_main

        all_params = list(model.parameters())
        params, lr_scale = _split_params(params)
        if params is None:
            self.params = [p for p in all_params if p.requires_grad]
        else:
            chosen = {id(p) for p in params}
            unknown = chosen - {id(p) for p in all_params}
            if unknown:
                raise ValueError(
                    f"{len(unknown)} of the given params are not parameters of the model; pass a subset of model.parameters()"
                )
            for p in all_params:
                p.requires_grad_(id(p) in chosen)
            self.params = [p for p in all_params if id(p) in chosen]
        if not self.params:
            raise ValueError("nothing to train: no parameter requires a gradient")
        if cfg.grad_checkpointing:
            _enable_grad_checkpointing(model)
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.params, cfg.weight_decay, lr_scale), lr=cfg.lr, betas=cfg.betas,
            foreach=self.device.type == "cuda" or None,
        )  # fmt: skip
        self.schedule = WarmupCosine(cfg.lr, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
        self.total = cfg.steps  # shortened by ``cfg.time_limit`` (see :class:`_BudgetClock`)
        self.stopped_by_time = False
        self.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
            if use_bf16 else contextlib.nullcontext
        )  # fmt: skip
        if cfg.compile:
            model.compile()
        self.step = 0
        self.prefetcher: Prefetcher | None = None
        self.last_eval: dict[str, float] = {}
        self.last_saved: int | None = None

    # ----------------------------------------------------------------------------------- state

    def _published_state(self) -> dict[str, torch.Tensor]:
        return (
            self.ema.averaged_state_dict(self.model)
            if self.ema is not None
            else self.model.state_dict()
        )

    def _check_finite_weights(self) -> None:
        bad = [
            k
            for k, v in self.model.state_dict().items()
            if v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:
            raise NonFiniteLossError(
                f"weights contain NaN/Inf at step {self.step} ({bad[:5]}); not saving over the last good "
                f"checkpoint (step {self.last_saved}). Lower --lr or check the data, then resume with --resume."
            )

    def save(self) -> None:
        """Checkpoint ``model.safetensors`` + ``state/`` (rank 0 writes; every rank must call)."""
        self._check_finite_weights()  # every rank holds the same weights, so all stop together
        rngs = dist_utils.all_gather_objects(capture_rng())
        if self.writes:
            model_cfg = self.run_config.get("model")
            st = RunState(
                step=self.step,
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                schedule=self.schedule.state_dict(),
                ema=self.ema.state_dict() if self.ema is not None else None,
                objective=self.objective.state_dict()
                if hasattr(self.objective, "state_dict")
                else None,
                sampler=self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None,
                rng=rngs,
                world_size=self.dist.world_size,
            )
            save_run_state(self.run_dir, st)
            import json

            from lol_dreamer.checkpoint import save_state_dict

            meta = {"config": json.dumps(model_cfg)} if model_cfg is not None else None
            save_state_dict(self.run_dir / "model.safetensors", self._published_state(), meta)
            self.log.flush()
            self._write_progress()
        self.last_saved = self.step
        dist_utils.barrier()

    def _restore(self) -> None:
        st = load_run_state(self.run_dir)
        self.model.load_state_dict({k: v.to(self.device) for k, v in st.model.items()})
        self.optimizer.load_state_dict(st.optimizer)
        if self.ema is not None:
            if st.ema is None:
                raise ValueError(
                    f"{self.run_dir} was trained without EMA; resume without --ema or start a new run"
                )
            self.ema.load_state_dict(st.ema)
        if st.objective is not None and hasattr(self.objective, "load_state_dict"):
            self.objective.load_state_dict(st.objective)
        if st.sampler is not None and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(st.sampler)
        if len(st.rng) == self.dist.world_size:
            restore_rng(st.rng[self.dist.rank])
        else:
            seed_everything(self.cfg.seed + st.step * 7919 + self.dist.rank)
        self.step = self.last_saved = st.step
        planned = int(st.schedule.get("steps", self.cfg.steps))
        asked = (load_run_config(self.run_dir).get("train") or {}).get("steps")
        if planned < self.cfg.steps == asked and st.schedule.get("kind") == "warmup_cosine":
            # An earlier --time-limit shortened the plan of these same --steps: keep following it
            # rather than jump back to a high learning rate (a new --steps sets a new total).
            self._replan(planned, int(st.schedule.get("warmup", self.cfg.warmup_steps)))

    def _prefetch_depth(self) -> int:
        """Batches to draw ahead: ``cfg.prefetch``, or for -1 two on CUDA unless the source keeps state."""
        if self.cfg.prefetch >= 0:
            return self.cfg.prefetch
        stateful = hasattr(self.sampler, "state_dict")  # its checkpointed state must match the step
        return 2 if self.device.type == "cuda" and not stateful else 0

    def _replan(self, total: int, warmup: int | None) -> None:
        """Shorten the run to ``total`` steps; the schedule's warmup and cosine end there instead."""
        total = max(1, min(total, self.cfg.steps))
        self.total = total
        self.schedule = WarmupCosine(self.cfg.lr, total, warmup, self.cfg.min_lr_ratio)

    def _plan_note(self) -> str:
        note = (
            ""
            if self.total == self.cfg.steps
            else f" (a time limit's plan; --steps {self.cfg.steps})"
        )
        if self.stopped_by_time:
            note += f", stopped at the time limit of {self.cfg.time_limit / 60:g} min"
        return note

    def _write_config(self) -> None:
        cfg_path = self.run_dir / "config.json"
        self._progress: dict[str, Any] = {}
        if cfg_path.exists() and self.resume:
            old = load_run_config(self.run_dir)
            if (old.get("progress") or {}).get("step") == self.step:
                self._progress = old["progress"]  # its seconds carry on from the checkpoint
            for key in ("kind", "model"):
                if (
                    key in self.run_config
                    and json_equal(old.get(key), self.run_config[key]) is False
                ):
                    raise ValueError(
                        f"--resume: {cfg_path} has a different {key!r} than this run "
                        f"({old.get(key)} vs {self.run_config[key]}); resume with the original settings or use a new --out"
                    )
        self._config = {**self.run_config, "train": self.cfg.to_dict()}
        if self._progress:
            self._config["progress"] = self._progress
        atomic_write_json(cfg_path, self._config)
        self._seconds_before = float(self._progress.get("seconds", 0.0))
        self._t_fit = time.perf_counter()
        self._hardware = hardware()  # read once; every checkpoint records it

    def _write_progress(self) -> None:
        """``config.json["progress"]``: where the run is (step, the plan's total steps), the training
        seconds up to this checkpoint over every invocation, and the hardware of this invocation."""
        if not hasattr(self, "_config"):  # saved outside fit(): no run configuration written yet
            return
        self._config["progress"] = {
            "step": self.step,
            "planned_steps": self.total,
            "seconds": round(self._seconds_before + time.perf_counter() - self._t_fit, 1),
            "world_size": self.dist.world_size,
            "hardware": self._hardware,
        }
        atomic_write_json(self.run_dir / "config.json", self._config)

    # ------------------------------------------------------------------------------------ loop

    def evaluate(self) -> dict[str, float]:
        """Run ``eval_fn`` on the published weights (EMA when on), in eval mode, without grads."""
        if self.eval_fn is None:
            return {}
        raw = (
            {k: v.clone() for k, v in self.model.state_dict().items()}
            if self.ema is not None
            else None
        )
        if self.ema is not None:
            self.ema.copy_to(self.model)
        self.model.eval()
        # Evaluation draws from forked RNGs so it never shifts the training stream (exact resume).
        np_state, py_state = np.random.get_state(), random.getstate()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad(), self.autocast():
                out = self.eval_fn(self.model, self.step) or {}
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
            self.model.train()
            if raw is not None:
                self.model.load_state_dict(raw)
        self.last_eval = {
            k: _scalar(v) for k, v in out.items() if isinstance(v, (int, float, torch.Tensor))
        }
        return self.last_eval

    def _train_step(self, step: int) -> dict[str, Any]:
        lr = self.schedule(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        raw = self.prefetcher.get(step) if self.prefetcher is not None else self.batch_fn(step)
        batch = to_device(raw, self.device)
        with self.autocast():
            out = self.objective(self.model, batch, step)
        out.loss.backward()
        dist_utils.all_reduce_gradients(self.params)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        loss = _scalar(out.loss)
        terms = {name: _scalar(v) for name, v in out.terms.items()}
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            bad = "loss" if not math.isfinite(loss) else "gradient norm"
            kept = (
                f"the last good checkpoint (step {self.last_saved}) in {self.run_dir} is intact"
                if self.last_saved is not None and self.run_dir is not None else "no checkpoint was written yet"
            )  # fmt: skip
            raise NonFiniteLossError(
                f"{bad} became {loss if bad == 'loss' else grad_norm} at step {step + 1} (terms: {terms}); "
                f"training stopped before applying the update and {kept}. Lower --lr, check the data, "
                "then continue with --resume."
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        row: dict[str, Any] = {"step": step + 1, "loss": loss}
        row.update({f"loss/{k}": v for k, v in terms.items()})
        row.update({f"metric/{k}": _scalar(v) for k, v in out.metrics.items()})
        row.update({"lr": lr, "grad_norm": grad_norm})
        return row

    def fit(self) -> TrainResult:
        """Train to ``cfg.steps`` (or the plan and budget of ``cfg.time_limit``); returns a :class:`TrainResult`."""
        cfg = self.cfg
        resuming = self.resume and self.run_dir is not None and has_state(self.run_dir)
        if self.run_dir is not None:
            refuse_existing_run(self.run_dir, self.resume)
        seed_everything(cfg.seed + self.dist.rank)
        dist_utils.broadcast_module(self.model)
        if resuming:
            self._restore()
        start = self.step
        if self.writes:
            self._write_config()
            self.log = MetricsLog(self.run_dir, resume_step=start if resuming else None)
        self.model.train()
        losses: list[float] = []
        bar = tqdm(
            total=self.total, initial=start, disable=not (cfg.progress and self.dist.is_main),
            desc="train", unit="step", dynamic_ncols=True,
        )  # fmt: skip
        depth = self._prefetch_depth()
        if depth > 0:
            pin = self.device.type == "cuda"
            self.prefetcher = Prefetcher(self.batch_fn, start, depth, pin_memory=pin)
        t0 = time.perf_counter()
        clock = _BudgetClock(cfg.time_limit, start, t0)
        try:
            while self.step < self.total:
                step = self.step
                t_step = time.perf_counter()
                row = self._train_step(step)
                self.step = step + 1
                if self.dist.enabled:
                    row["loss"] = dist_utils.all_reduce_mean(row["loss"], self.device)
                now = time.perf_counter()
                row["perf/steps_per_s"] = 1.0 / max(now - t_step, 1e-9)
                planned = clock.plan(self.step, now)
                if planned is not None:
                    if self.dist.enabled:  # every rank follows the same plan
                        planned = int(dist_utils.all_reduce_mean(float(planned), self.device))
                    if planned < self.total:
                        self._replan(planned, cfg.warmup)
                        bar.total = self.total
                        bar.refresh()
                out_of_time = clock.expired(now)
                if self.dist.enabled and cfg.time_limit > 0:  # every rank stops at the same step
                    out_of_time = dist_utils.all_reduce_mean(float(out_of_time), self.device) > 0
                last = self.step == self.total or out_of_time
                self.stopped_by_time = out_of_time and self.step < self.total
                if self.dist.is_main and (
                    (cfg.eval_every and self.step % cfg.eval_every == 0) or last
                ):
                    row.update({f"eval/{k}": v for k, v in self.evaluate().items()})
                losses.append(row["loss"])
                if self.writes:
                    self.log.write(row)
                due = (cfg.save_every and self.step % cfg.save_every == 0) or last
                if due and self.run_dir is not None:
                    self.save()
                bar.update(1)
                if self.step % max(1, cfg.log_every) == 0 or last:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2e}")
                if last:
                    break
        finally:
            bar.close()
            if self.prefetcher is not None:
                self.prefetcher.close()
                self.prefetcher = None
            if self.writes:
                self.log.close()
        seconds = time.perf_counter() - t0
        summary = self._summary(start, losses, seconds)
        if cfg.progress and self.dist.is_main:
            print(summary)
        return TrainResult(
            self.run_dir, self.step, start, losses, dict(self.last_eval), seconds, summary
        )

    def _summary(self, start: int, losses: list[float], seconds: float) -> str:
        n = len(losses)
        if n == 0:
            return f"Nothing to do: the run was already at step {self.step} of {self.total}."
        k = max(1, min(50, n // 10))
        first, final = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
        where = (
            f"Weights ({'EMA' if self.ema is not None else 'raw'}) are in {self.run_dir / 'model.safetensors'}, "
            f"one metrics row per step in {self.run_dir / 'metrics.jsonl'}, and {self.run_dir / 'state'} "
            "resumes it exactly (--resume)."
            if self.run_dir is not None else "Nothing was written (no run folder)."
        )  # fmt: skip
        evals = ", ".join(f"{k} {v:.4g}" for k, v in self.last_eval.items())
        return (
            f"Trained steps {start + 1}–{self.step} of {self.total}{self._plan_note()} in {seconds:.1f} s "
            f"({n / max(seconds, 1e-9):.2f} steps/s on {self.device}, {self.dist.world_size} process(es)); "
            f"loss {first:.4g} (mean of the first {k}) → {final:.4g} (mean of the last {k})"
            + (f"; held-out: {evals}" if evals else "")
            + f". {where}"
        )


def json_equal(a: Any, b: Any) -> bool:
    """Compare two configs as JSON would see them (tuples = lists)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def train(
    model: nn.Module,
    objective: Objective,
    data: Callable[[int], dict] | Any,
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Build a :class:`Trainer` and run it to ``cfg.steps``; see :class:`Trainer` for the arguments."""
    return Trainer(model, objective, data, cfg, run_dir, **kwargs).fit()
