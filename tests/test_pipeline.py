"""``lol-dreamer pipeline``: the --quick run end to end, resume after an interruption, skipping,
changed arguments, stage selection, the --data path and failure messages."""

from __future__ import annotations

import json
import time

import pytest
from pipeline_fixture import INTERRUPT_AT, quick_config, quick_run

from lol_dreamer.pipeline import StageFailed, marker_path, run_pipeline, select_stages
from lol_dreamer.pipeline_config import QUICK
from lol_dreamer.pipeline_stages import STAGE_NAMES


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return quick_run(tmp_path_factory)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_quick_pipeline_runs_every_stage_into_its_folder(run):
    rec = run.record
    assert [n for n in STAGE_NAMES if rec["stages"][n]["status"] == "done"] == list(STAGE_NAMES)
    out = run.out
    for folder in ("data", "tokenizer", "world_model", "bc", "pmpo", "eval"):
        assert (out / folder).is_dir()
    for run_dir, kind in (("tokenizer", "tokenizer"), ("world_model", "dynamics"), ("bc", "agent"),
                          ("pmpo", "imagine")):  # fmt: skip
        cfg = json.loads((out / run_dir / "config.json").read_text())
        assert cfg["kind"] == kind
    # every trainer ran exactly its step count, one metrics row per step (phase 3 adds a step-0
    # row: the prior's return in the real game)
    for run_dir, key in (("tokenizer", "steps_tokenizer"), ("world_model", "steps_dynamics"),
                         ("bc", "steps_agent"), ("pmpo", "steps_imagine")):  # fmt: skip
        steps = [r["step"] for r in _rows(out / run_dir / "metrics.jsonl") if r["step"] > 0]
        assert steps == list(range(1, QUICK[key] + 1)), run_dir
    # phase 2 starts from the phase-1 world model, phase 3 from phase 2
    assert json.loads((out / "bc" / "config.json").read_text())["parent"] == str(
        out / "world_model"
    )
    assert json.loads((out / "pmpo" / "config.json").read_text())["parent"] == str(out / "bc")


def test_pipeline_json_records_settings_timings_and_spec_metrics(run):
    rec = json.loads((run.out / "pipeline.json").read_text())
    assert rec["settings"]["preset"] == "test" and rec["settings"]["quick"] is True
    assert rec["command"].startswith("lol-dreamer pipeline --out ") and "--quick" in rec["command"]
    assert {"platform", "cpu_count", "torch"} <= set(rec["hardware"])
    for name in STAGE_NAMES:
        st = rec["stages"][name]
        assert st["seconds"] > 0 and st["args"] and "finished" in st
        assert json.loads(marker_path(run.out, name).read_text())["args"] == st["args"]
    m = {k: v["metrics"] for k, v in rec["stages"].items()}
    assert m["collect"]["episodes"] == QUICK["episodes"]
    assert m["collect"]["frames"] == sum(
        r["length"] for r in json.loads((run.out / "data" / "index.json").read_text())["episodes"]
    )
    assert m["eval-tokenizer"]["psnr"] > 5 and set(m["eval-tokenizer"]["probe"]) >= {
        "hp",
        "gold",
        "level",
    }
    curve = m["pmpo"]["real_return_curve"]  # the live policy in LaneSim: prior first, then training
    assert curve[0]["step"] == 0 and curve[-1]["step"] == QUICK["steps_imagine"]
    wm = m["eval-world-model"]
    assert set(wm["psnr"]) == {"1", "4", "16"} and set(wm["psnr_copy_last"]) == set(wm["psnr"])
    assert "coherent_horizon" in wm and "reward_mae" in wm and wm["dream_fps"] > 0
    names = list(m["eval-agent"]["returns"])
    assert (
        names[:2] == ["random", "scripted"]
        and names[2].startswith("pmpo")
        and names[3].startswith("bc")
    )
    assert rec["total_seconds"] == pytest.approx(sum(v["seconds"] for v in rec["stages"].values()))


def test_interrupted_stage_is_recorded_then_resumes_from_its_checkpoint(run):
    st = run.interrupted_record["stages"]
    assert st["collect"]["status"] == "done"
    assert st["tokenizer"]["status"] == "interrupted"
    assert all(st[n]["status"] == "pending" for n in STAGE_NAMES[2:])
    # the second call skipped collection and continued the tokenizer after its step-8 checkpoint
    assert "[collect] done already" in run.resume_output
    assert (
        f"Trained steps {INTERRUPT_AT + 1}–{QUICK['steps_tokenizer']} of {QUICK['steps_tokenizer']}"
        in run.resume_output
    )
    steps = [r["step"] for r in _rows(run.out / "tokenizer" / "metrics.jsonl")]
    assert steps == list(range(1, QUICK["steps_tokenizer"] + 1))


def test_rerun_skips_every_stage_quickly(run, capsys):
    mtimes = {n: marker_path(run.out, n).stat().st_mtime_ns for n in STAGE_NAMES}
    t0 = time.perf_counter()
    # checkpoint interval and device do not change results, so they do not count as changes
    run_pipeline(quick_config(run.out, save_every=3, device="cpu"))
    assert time.perf_counter() - t0 < 20
    out = capsys.readouterr().out
    assert all(f"[{n}] done already" in out for n in STAGE_NAMES)
    assert {n: marker_path(run.out, n).stat().st_mtime_ns for n in STAGE_NAMES} == mtimes
    assert "Pipeline folder" in out and "LaneSim return" in out


def test_changed_arguments_are_refused_with_the_difference(run):
    with pytest.raises(
        ValueError, match=r"stage 'dynamics'.*steps_dynamics: 12 → 99.*--redo dynamics"
    ):
        run_pipeline(quick_config(run.out, steps_dynamics=99), quiet=True)


def test_redo_runs_a_stage_again_and_leaves_the_others(run, capsys):
    before = {n: marker_path(run.out, n).stat().st_mtime_ns for n in STAGE_NAMES}
    run_pipeline(quick_config(run.out), stages=["eval-tokenizer"], redo=["eval-tokenizer"])
    after = {n: marker_path(run.out, n).stat().st_mtime_ns for n in STAGE_NAMES}
    assert [n for n in STAGE_NAMES if before[n] != after[n]] == ["eval-tokenizer"]
    assert "[eval-tokenizer] held-out PSNR/SSIM" in capsys.readouterr().out


def test_stage_selection():
    assert [s.name for s in select_stages(until="tokenize")] == ["collect", "tokenizer", "tokenize"]
    assert [s.name for s in select_stages(["eval-agent", "bc"])] == ["bc", "eval-agent"]
    with pytest.raises(ValueError, match="unknown stage 'dream'"):
        select_stages(["dream"])


def test_a_stage_whose_input_is_missing_is_refused(tmp_path):
    with pytest.raises(ValueError, match="stage 'dynamics' needs the output of stage 'tokenize'"):
        run_pipeline(quick_config(tmp_path / "R"), stages=["dynamics"], quiet=True)


def test_data_path_starts_from_an_existing_dataset(tmp_path, run):
    import shutil

    data = tmp_path / "recordings"
    shutil.copytree(run.out / "data", data)
    out = tmp_path / "R"
    rec = run_pipeline(
        quick_config(out, data=str(data), steps_tokenizer=2), until="tokenize", quiet=True
    )
    assert not (out / "data").exists()  # nothing collected
    assert rec["stages"]["collect"]["args"] == {"data": str(data.resolve())}
    assert rec["stages"]["collect"]["metrics"]["episodes"] == QUICK["episodes"]
    assert (
        rec["stages"]["tokenize"]["metrics"]["episodes"] == QUICK["episodes"]
    )  # new tokenizer: all re-encoded
    meta = json.loads(next((data / "episodes").glob("*/meta.json")).read_text())
    assert str(out / "tokenizer") in json.dumps(meta)
    assert rec["stages"]["dynamics"]["status"] == "pending"


def test_tokenizer_flag_adopts_a_trained_tokenizer(tmp_path, run):
    import shutil

    data = tmp_path / "recordings"
    shutil.copytree(run.out / "data", data)
    out = tmp_path / "R"
    tok = run.out / "tokenizer"
    rec = run_pipeline(
        quick_config(out, data=str(data), tokenizer=str(tok)), until="tokenize", quiet=True
    )
    assert not (out / "tokenizer").exists()  # nothing trained
    args = rec["stages"]["tokenizer"]["args"]
    assert args["tokenizer"] == str(tok.resolve()) and len(args["sha256"]) == 64
    assert rec["stages"]["tokenizer"]["metrics"]["adopted"] is True
    meta = json.loads(next((data / "episodes").glob("*/meta.json")).read_text())
    assert str(tok.resolve()) in json.dumps(meta)  # the latents come from the adopted tokenizer
    from lol_dreamer.model_card import _adopted_run

    trained = json.loads((tok / "config.json").read_text())  # the model card reports its own run
    card_row = _adopted_run(rec, "tokenizer")
    assert card_row["steps"] == trained["train"]["steps"] and card_row["arch"] == "transformer"
    assert trained["progress"]["step"] == trained["train"]["steps"]  # the run says how far it got
    assert card_row["where"].endswith(f"CPUs (torch {trained['progress']['hardware']['torch']})")
    with pytest.raises(StageFailed, match="not a tokenizer run"):
        run_pipeline(
            quick_config(tmp_path / "R2", data=str(data), tokenizer=str(run.out / "world_model")),
            until="tokenizer",
            quiet=True,
        )


def test_a_failing_stage_is_named_with_how_to_resume(tmp_path):
    from lol_dreamer.envs.collect import collect

    data = tmp_path / "one"
    collect(data, 1, res=32, max_steps=20, progress=False)
    with pytest.raises(
        StageFailed,
        match=r"pipeline stage 'collect' failed.*at least 2.*rerun `lol-dreamer pipeline --out",
    ):
        run_pipeline(quick_config(tmp_path / "R", data=str(data)), quiet=True)
    rec = json.loads((tmp_path / "R" / "pipeline.json").read_text())
    assert (
        rec["stages"]["collect"]["status"] == "failed"
        and "at least 2" in rec["stages"]["collect"]["error"]
    )
    assert not marker_path(tmp_path / "R", "collect").exists()


def test_an_interrupted_collection_is_topped_up_to_the_same_episodes(tmp_path, run):
    import numpy as np

    from lol_dreamer.data import open_dataset
    from lol_dreamer.envs.collect import collect

    out = tmp_path / "R"
    q = QUICK
    collect(out / "data", 2, res=q["res"], task="farm", max_steps=q["max_steps"], progress=False)
    rec = run_pipeline(quick_config(out), until="collect", quiet=True)
    assert rec["stages"]["collect"]["metrics"]["episodes"] == q["episodes"]
    mine, ref = open_dataset(out / "data"), open_dataset(run.out / "data")
    assert mine.names == ref.names
    for i in range(len(ref)):
        np.testing.assert_array_equal(np.asarray(mine[i].frames), np.asarray(ref[i].frames))
        np.testing.assert_array_equal(np.asarray(mine[i].actions), np.asarray(ref[i].actions))


def test_learning_rates_architecture_and_flow_fraction_reach_the_trainers(tmp_path, monkeypatch):
    from lol_dreamer import pipeline_stages as ps
    from lol_dreamer.pipeline_config import PipelineConfig

    cfg = PipelineConfig(
        out=str(tmp_path / "run"), quick=True, lr_dynamics=1e-3, flow_frac=0.5,
        arch_tokenizer="cnn", lr_tokenizer=2e-3,
    )  # fmt: skip
    assert "--lr-dynamics 0.001" in cfg.command() and "--arch-tokenizer cnn" in cfg.command()
    s = cfg.resolved()
    calls: list[list[str]] = []
    monkeypatch.setattr(ps, "_cli", lambda argv: calls.append([str(x) for x in argv]))
    monkeypatch.setattr(ps, "last_eval", lambda path: {})
    monkeypatch.setattr(ps, "_n_params", lambda path: 0)
    out = tmp_path / "run"
    p = ps.Paths(out=out, data=out / "data", external_data=False)
    ps._dynamics(ps._dynamics_args(s, p), p, s)
    ps._tokenizer(ps._tokenizer_args(s, p), p, s)
    dyn, tok = calls
    assert dyn[dyn.index("--lr") + 1] == "0.001" and dyn[dyn.index("--flow-frac") + 1] == "0.5"
    assert tok[tok.index("--arch") + 1] == "cnn" and tok[tok.index("--lr") + 1] == "0.002"
    # an unset rate leaves the trainer's own default: no --lr flag at all
    calls.clear()
    s2 = PipelineConfig(out=str(tmp_path / "run"), quick=True).resolved()
    ps._dynamics(ps._dynamics_args(s2, p), p, s2)
    assert "--lr" not in calls[0]
    assert calls[0][calls[0].index("--flow-frac") + 1] == "0.5"  # the recipe's (--quick) value


def test_ema_video_weight_and_precision_reach_the_trainers(tmp_path, monkeypatch):
    from lol_dreamer import pipeline_stages as ps
    from lol_dreamer.pipeline_config import FULL, PipelineConfig

    cfg = PipelineConfig(
        out=str(tmp_path / "run"), quick=True, ema_dynamics=0.99, video_weight=5.0, precision="bf16"
    )
    assert "--video-weight 5.0" in cfg.command() and "--precision bf16" in cfg.command()
    s = cfg.resolved()
    calls: list[list[str]] = []
    monkeypatch.setattr(ps, "_cli", lambda argv: calls.append([str(x) for x in argv]))
    monkeypatch.setattr(ps, "last_eval", lambda path: {})
    out = tmp_path / "run"
    p = ps.Paths(out=out, data=out / "data", external_data=False)
    ps._dynamics(ps._dynamics_args(s, p), p, s)
    ps._bc(ps._bc_args(s, p), p, s)
    dyn, bc = calls
    assert "--ema" in dyn and dyn[dyn.index("--ema-decay") + 1] == "0.99"
    assert dyn[dyn.index("--precision") + 1] == "bf16" and bc[bc.index("--precision") + 1] == "bf16"
    assert bc[bc.index("--video-weight") + 1] == "5.0"
    # the recipe: EMA on and the heavy video term in phase 2; --quick: no EMA; precision unset
    assert FULL["ema_dynamics"] > 0 and FULL["video_weight"] == 20.0
    calls.clear()
    s2 = PipelineConfig(out=str(out), quick=True).resolved()
    ps._dynamics(ps._dynamics_args(s2, p), p, s2)
    assert "--ema" not in calls[0] and "--precision" not in calls[0]


def test_world_model_flag_adopts_a_trained_dynamics_run(tmp_path, run):
    import shutil

    data = tmp_path / "recordings"
    shutil.copytree(run.out / "data", data)
    tok, wm = run.out / "tokenizer", run.out / "world_model"
    out = tmp_path / "R"
    rec = run_pipeline(
        quick_config(out, data=str(data), tokenizer=str(tok), world_model=str(wm)),
        until="dynamics",
        quiet=True,
    )
    assert not (out / "world_model").exists()  # nothing trained
    args = rec["stages"]["dynamics"]["args"]
    assert args["world_model"] == str(wm.resolve()) and len(args["sha256"]) == 64
    assert rec["stages"]["dynamics"]["metrics"]["adopted"] is True
    assert rec["folders"]["world_model"] == str(wm.resolve())
    from lol_dreamer.model_card import _adopted_note, _adopted_run

    note = " ".join(_adopted_note(rec))  # the model card names both adopted runs
    assert f"--world-model {wm.resolve()}" in note and f"--tokenizer {tok.resolve()}" in note
    trained = json.loads((wm / "config.json").read_text())
    assert _adopted_run(rec, "world_model")["steps"] == trained["train"]["steps"]
    with pytest.raises(ValueError, match="needs --tokenizer"):
        run_pipeline(quick_config(tmp_path / "R2", world_model=str(wm)), quiet=True)
    with pytest.raises(StageFailed, match="not a phase-1b run"):
        run_pipeline(
            quick_config(tmp_path / "R3", data=str(data), tokenizer=str(tok), world_model=str(tok)),
            until="dynamics",
            quiet=True,
        )
