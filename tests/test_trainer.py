import itertools
import json
import math

import pytest
import torch
from _trainer_toys import RMSObjective, ToyData, build_toy

from lol_dreamer import checkpoint
from lol_dreamer.training import (
    EMA,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    WarmupCosine,
    default_warmup,
    train,
)
from lol_dreamer.training.run_log import read_metrics

TOY = {"d_in": 4, "hidden": 16}


@pytest.fixture(autouse=True)
def _toy_kind():
    checkpoint.register_builder("toy", build_toy)
    yield
    checkpoint.BUILDERS.pop("toy", None)


def _cfg(**kw):
    base = dict(steps=30, lr=3e-2, save_every=10, device="cpu", progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _run(run_dir, cfg, resume=False, objective=None, **kw):
    model = build_toy(TOY)
    return train(
        model, objective or RMSObjective(), ToyData(), cfg, run_dir,
        run_config={"kind": "toy", "model": TOY, "data": "toy"}, resume=resume, **kw,
    )  # fmt: skip


class Interrupt(RMSObjective):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def __call__(self, model, batch, step):
        if step == self.at:
            raise KeyboardInterrupt
        return super().__call__(model, batch, step)


def test_default_warmup():
    assert default_warmup(100) == 5
    assert default_warmup(10) == 0
    assert default_warmup(20_000) == 1000
    assert default_warmup(1_000_000) == 1000
    assert TrainConfig(steps=200).warmup_steps == 10
    assert TrainConfig(steps=200, warmup=3).warmup_steps == 3


def test_schedule_shape():
    s = WarmupCosine(lr=1.0, steps=100, warmup=10, min_lr_ratio=0.1)
    lrs = [s(i) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(lrs[:10]))  # rising warmup
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # monotone decay
    assert lrs[-1] == pytest.approx(0.1)  # floor reached at the last step
    mid = 10 + (99 - 10) / 2
    assert s(int(mid)) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * (int(mid) - 10) / 89)))
    assert WarmupCosine(lr=2.0, steps=5, warmup=0)(0) == pytest.approx(2.0)


def test_ema_maths():
    m = torch.nn.Linear(3, 2)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.update(m)
    assert torch.allclose(ema.state_dict()["weight"], torch.full((2, 3), 0.1))
    ema.update(m)  # 0.9·0.1 + 0.1·1
    assert torch.allclose(ema.state_dict()["weight"], torch.full((2, 3), 0.19))
    # n updates towards a constant: 1 − 0.9ⁿ
    for _ in range(8):
        ema.update(m)
    assert torch.allclose(ema.state_dict()["weight"], torch.full((2, 3), 1 - 0.9**10), atol=1e-6)
    ema.copy_to(m)
    assert torch.allclose(m.weight, torch.full((2, 3), 1 - 0.9**10), atol=1e-6)


def test_metrics_rows_one_per_step_and_loss_falls(tmp_path):
    res = _run(tmp_path / "run", _cfg(steps=40))
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(1, 41))
    for r in rows:
        assert {"loss", "loss/mse", "loss/abs", "lr", "grad_norm", "perf/steps_per_s"} <= set(r)
    assert [r["loss"] for r in rows] == pytest.approx(res.losses)
    first = sum(r["loss/mse"] for r in rows[:5]) / 5
    last = sum(r["loss/mse"] for r in rows[-5:]) / 5
    assert last < 0.5 * first
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (
        cfg["kind"] == "toy"
        and cfg["model"] == TOY
        and cfg["train"]["steps"] == 40
        and cfg["data"] == "toy"
    )
    assert "Trained steps 1–40" in res.summary


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path):
    full = _run(tmp_path / "full", _cfg(ema_decay=0.9))
    # The same run killed during step 24 (last checkpoint: step 20), then resumed to 30.
    run = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _run(run, _cfg(ema_decay=0.9), objective=Interrupt(at=23))
    assert checkpoint.load_run_config(run)["kind"] == "toy"
    resumed = _run(run, _cfg(ema_decay=0.9), resume=True)
    assert resumed.start_step == 20
    assert resumed.losses == full.losses[20:]  # bit-exact
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert [r["loss"] for r in rows] == full.losses
    a = checkpoint.load_state_dict_file(tmp_path / "full" / "model.safetensors")
    b = checkpoint.load_state_dict_file(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_refuses_to_overwrite_without_resume(tmp_path):
    _run(tmp_path / "r", _cfg(steps=10))
    with pytest.raises(ValueError, match="--resume"):
        _run(tmp_path / "r", _cfg(steps=10))


def test_nan_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path / "nan"
    with pytest.raises(
        NonFiniteLossError, match=r"loss became nan at step 15.*last good checkpoint \(step 10\)"
    ):
        _run(run, _cfg(steps=30, save_every=10), objective=RMSObjective(nan_at=14))
    weights = checkpoint.load_state_dict_file(run / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "ref", _cfg(steps=30, save_every=10), objective=Interrupt(at=12))
    ref = checkpoint.load_state_dict_file(tmp_path / "ref" / "model.safetensors")
    # the saved weights are exactly those of step 10; the state folder says so too
    assert all(torch.equal(weights[k], ref[k]) for k in ref)
    assert json.loads((run / "state" / "trainer.json").read_text())["step"] == 10
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 15))


def test_eval_fn_uses_ema_weights_and_params_subset(tmp_path):
    seen = {}

    def eval_fn(model, step):
        seen[step] = {k: v.clone() for k, v in model.state_dict().items()}
        assert not model.training and not torch.is_grad_enabled()
        return {"score": float(step)}

    model = build_toy(TOY)
    frozen0 = model[0].weight.detach().clone()
    res = train(
        model, RMSObjective(), ToyData(), _cfg(steps=12, eval_every=6, ema_decay=0.5), tmp_path / "e",
        params=list(model[2].parameters()), eval_fn=eval_fn, run_config={"kind": "toy", "model": TOY},
    )  # fmt: skip
    assert torch.equal(model[0].weight, frozen0)  # frozen part untouched
    assert sorted(seen) == [6, 12] and res.eval == {"score": 12.0}
    rows = read_metrics(tmp_path / "e")
    assert rows[5]["eval/score"] == 6.0 and "eval/score" not in rows[4]
    published = checkpoint.load_state_dict_file(tmp_path / "e" / "model.safetensors")
    assert torch.equal(published["2.weight"], seen[12]["2.weight"])  # evaluated = published = EMA
    assert not torch.equal(published["2.weight"], model[2].weight)  # model keeps raw weights


class CountingData(ToyData):
    """A sampler with state: the number of batches drawn, restored on resume."""

    def __init__(self):
        super().__init__()
        self.drawn = 0

    def sample(self, step):
        self.drawn += 1
        return super().sample(step)

    def state_dict(self):
        return {"drawn": self.drawn}

    def load_state_dict(self, state):
        self.drawn = state["drawn"]


def test_sampler_state_is_checkpointed_and_unsupported_options_fail_clearly(tmp_path):
    model = build_toy(TOY)
    with pytest.raises(KeyboardInterrupt):
        train(model, Interrupt(at=7), CountingData(), _cfg(steps=10, save_every=5), tmp_path / "s",
              run_config={"kind": "toy", "model": TOY})  # fmt: skip
    data = CountingData()
    train(build_toy(TOY), RMSObjective(), data, _cfg(steps=10, save_every=5), tmp_path / "s",
          run_config={"kind": "toy", "model": TOY}, resume=True)  # fmt: skip
    assert data.drawn == 10  # 5 restored + 5 drawn after resuming
    with pytest.raises(ValueError, match="gradient checkpointing"):
        train(build_toy(TOY), RMSObjective(), ToyData(), _cfg(steps=2, grad_checkpointing=True))
    with pytest.raises(ValueError, match="not parameters of the model"):
        train(
            build_toy(TOY),
            RMSObjective(),
            ToyData(),
            _cfg(steps=2),
            params=[torch.nn.Parameter(torch.ones(1))],
        )


def test_param_groups_with_lr_scale_follow_the_schedule_scaled(tmp_path):
    model = build_toy(TOY)
    groups = [
        {"params": list(model[2].parameters()), "lr_scale": 1.0},
        {"params": list(model[0].parameters()), "lr_scale": 0.25},
    ]
    trainer = Trainer(
        model, RMSObjective(), ToyData(), _cfg(steps=4), tmp_path / "g", params=groups,
        run_config={"kind": "toy", "model": TOY},
    )  # fmt: skip
    trainer.fit()
    lr = trainer.schedule(4)
    scales = sorted({g["lr_scale"] for g in trainer.optimizer.param_groups})
    assert scales == [0.25, 1.0]
    for g in trainer.optimizer.param_groups:
        assert g["lr"] == pytest.approx(lr * g["lr_scale"])
    with pytest.raises(ValueError, match="lr_scale must be > 0"):
        Trainer(build_toy(TOY), RMSObjective(), ToyData(), _cfg(), None,
                params=[{"params": list(model.parameters()), "lr_scale": 0.0}])  # fmt: skip


class Slow(RMSObjective):
    """Sleeps ``dt`` per step before step ``slow_from`` and ``dt_late`` from it on."""

    def __init__(self, dt: float, slow_from: int = 10**9, dt_late: float = 0.0):
        super().__init__()
        self.dt, self.slow_from, self.dt_late = dt, slow_from, dt_late

    def __call__(self, model, batch, step):
        import time

        time.sleep(self.dt if step < self.slow_from else self.dt_late)
        return super().__call__(model, batch, step)


def test_time_limit_shortens_the_plan_so_the_cosine_ends_inside_the_budget(tmp_path):
    run = tmp_path / "run"
    limit = 1.5
    res = _run(run, _cfg(steps=100_000, time_limit=limit, save_every=0), objective=Slow(0.01))
    assert 40 < res.step < 100_000
    assert res.seconds < limit + 0.5  # the plan kept a margin for the final eval and save
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, res.step + 1))
    lrs = [r["lr"] for r in rows]
    assert lrs[-1] == pytest.approx(3e-2 * 0.1, rel=1e-6)  # the cosine reached its floor
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(lrs[40:]))  # no jump after re-planning
    assert f"of {res.step} (a time limit's plan; --steps 100000)" in res.summary
    # The final checkpoint is the last step, and a resume follows the plan instead of restarting
    # the cosine from --steps.
    again = _run(run, _cfg(steps=100_000, save_every=0), resume=True)
    assert again.start_step == res.step and again.losses == []
    assert "Nothing to do" in again.summary
    # A new --steps sets a new total, as for any resumed run.
    more = _run(run, _cfg(steps=res.step + 5, save_every=0), resume=True)
    assert more.step == res.step + 5 and len(more.losses) == 5


def test_time_limit_stops_at_the_budget_and_resume_finishes_the_plan(tmp_path):
    run = tmp_path / "run"
    # Fast while the clock calibrates (steps 10-40), then 10x slower: the plan overshoots the
    # budget, so the run must stop at the limit itself, checkpoint there, and resume to the plan.
    slow = Slow(0.005, slow_from=45, dt_late=0.05)
    res = _run(run, _cfg(steps=100_000, time_limit=1.2, save_every=0), objective=slow)
    assert "stopped at the time limit" in res.summary
    assert res.seconds < 1.2 + 0.5
    planned = json.loads((run / "state" / "trainer.json").read_text())["schedule"]["steps"]
    assert res.step < planned < 100_000
    cut_lr = read_metrics(run)[-1]["lr"]
    rest = _run(run, _cfg(steps=100_000, save_every=0), resume=True)
    assert rest.start_step == res.step and rest.step == planned
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, planned + 1))
    assert rows[res.step]["lr"] <= cut_lr  # the schedule went on from where it stopped
    assert rows[-1]["lr"] == pytest.approx(3e-2 * 0.1, rel=1e-6)


def test_time_limit_flag_is_minutes():
    import argparse

    from lol_dreamer.commands.loop_args import add_loop_args

    p = argparse.ArgumentParser()
    add_loop_args(p, steps=10, lr=1e-3, save_every=5, batch_size=4, eval_every=0)
    assert TrainConfig.from_args(p.parse_args(["--time-limit", "2.5"])).time_limit == 150.0
    assert TrainConfig.from_args(p.parse_args([])).time_limit == 0.0
    with pytest.raises(ValueError, match="time_limit"):
        TrainConfig(time_limit=-1)


def test_prefetched_batches_train_exactly_as_inline_ones(tmp_path):
    inline = _run(tmp_path / "a", _cfg(prefetch=0, ema_decay=0.9))
    ahead = _run(tmp_path / "b", _cfg(prefetch=3, ema_decay=0.9))
    assert ahead.losses == inline.losses  # bit-exact: the batches are a pure function of the step
    # ... also across a resume, where the prefetcher starts at the checkpoint's step.
    run = tmp_path / "c"
    with pytest.raises(KeyboardInterrupt):
        _run(run, _cfg(prefetch=2, ema_decay=0.9), objective=Interrupt(at=23))
    resumed = _run(run, _cfg(prefetch=2, ema_decay=0.9), resume=True)
    assert resumed.losses == inline.losses[20:]


def test_prefetcher_order_errors_and_close():
    from lol_dreamer.training.prefetch import Prefetcher

    def batch(step):
        if step == 5:
            raise OSError("disk gone at step 5")
        return {"x": torch.full((2,), float(step)), "meta": [torch.zeros(1)]}

    pf = Prefetcher(batch, start=2, depth=2, pin_memory=False)
    assert [float(pf.get(s)["x"][0]) for s in (2, 3, 4)] == [2.0, 3.0, 4.0]
    with pytest.raises(OSError, match="disk gone"):
        pf.get(5)
    pf.close()
    pf = Prefetcher(batch, start=0, depth=1)
    with pytest.raises(RuntimeError, match="out of order"):
        pf.get(1)
    pf.close()
    assert not pf._thread.is_alive()
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(batch, start=0, depth=0)


def test_prefetch_auto_is_off_on_cpu_and_for_stateful_sources():
    class Stateful(ToyData):
        def state_dict(self):
            return {}

    for data, device, want in ((ToyData(), "cpu", 0), (Stateful(), "cpu", 0)):
        t = Trainer(build_toy(TOY), RMSObjective(), data, _cfg(device=device))
        assert t._prefetch_depth() == want
    t = Trainer(build_toy(TOY), RMSObjective(), ToyData(), _cfg(prefetch=4))
    assert t._prefetch_depth() == 4


def test_config_records_progress_seconds_and_hardware_across_a_resume(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(run, _cfg(), objective=Interrupt(at=23))
    first = json.loads((run / "config.json").read_text())["progress"]
    assert first["step"] == 20 and first["planned_steps"] == 30 and first["seconds"] >= 0
    assert {"platform", "cpu_count", "torch", "cuda"} <= set(first["hardware"])
    _run(run, _cfg(), resume=True)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["progress"]["step"] == 30 and cfg["progress"]["seconds"] >= first["seconds"]
    assert cfg["train"]["steps"] == 30 and cfg["kind"] == "toy"
    # A time-limited run records the plan it followed, and the model card reads the trained steps.
    from lol_dreamer.model_card import _adopted_run

    limited = tmp_path / "limited"
    res = _run(limited, _cfg(steps=100_000, time_limit=1.0, save_every=0), objective=Slow(0.01))
    prog = json.loads((limited / "config.json").read_text())["progress"]
    assert prog["step"] == res.step == prog["planned_steps"] < 100_000
    row = _adopted_run({"folders": {"tokenizer": str(limited)}}, "tokenizer")
    assert row["steps"] == res.step and "CPUs (torch" in row["where"]
