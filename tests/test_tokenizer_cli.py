import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lol_dreamer import checkpoint
from lol_dreamer.cli import main
from lol_dreamer.data import open_dataset, write_episode
from lol_dreamer.latents import encode_episodes
from lol_dreamer.training.run_log import read_metrics

RES = 16
FIELDS = ["x", "hp", "gold", "level"]


def _episode(rng: np.random.Generator, t: int = 20):
    """Frames whose HUD shows the state: a bar ∝ hp, a block whose brightness ∝ gold, level dots."""
    hp = np.clip(100 - np.cumsum(rng.uniform(0, 6, t)), 5, 100)
    gold = np.cumsum(rng.uniform(0, 20, t))
    level = 1 + (np.arange(t) * rng.uniform(0.1, 0.3)).astype(int)
    frames = np.zeros((t, RES, RES, 3), np.uint8)
    frames[..., 2] = 40
    for i in range(t):
        frames[i, :3, : max(1, round(hp[i] / 100 * RES)), 0] = 230
        frames[i, 6:12, 6:12, 1] = min(255, int(gold[i] / 2))
        frames[i, 14:, : min(RES, 2 * level[i]), :] = 200
    state = np.stack([np.zeros(t), hp, gold, level], 1).astype(np.float32)
    return frames, state


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for _ in range(8):
        frames, state = _episode(rng)
        write_episode(
            root, frames=frames, actions=None, state=state, state_fields=FIELDS, source="test"
        )
    return root


def test_lpips_without_weights_stops_before_training(tmp_path, dataset):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "empty_torch_home")}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lol_dreamer.cli", "train", "tokenizer", "--data", str(dataset),
           "--out", str(out), "--preset", "test", "--steps", "5", "--lpips-weight", "0.2"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "--lpips-weight 0" in proc.stderr and "--lpips-weights PATH" in proc.stderr
    assert not out.exists()  # nothing started: no run folder, no step


def test_train_tokenize_eval_end_to_end(tmp_path, dataset, capsys):
    run = tmp_path / "tok"
    common = ["--data", str(dataset), "--out", str(run), "--preset", "test", "--batch-size", "4",
              "--seq-len", "3", "--lr", "3e-3", "--lpips-weight", "0", "--eval-every", "10",
              "--save-every", "10", "--held-out", "0.25", "--device", "cpu"]  # fmt: skip
    assert (
        main(["train", "tokenizer", *common, "--steps", "30", "--ema", "--ema-decay", "0.9"]) == 0
    )
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert all("loss/mse" in r for r in rows) and "eval/psnr" in rows[9] and "eval/ssim" in rows[29]
    first = np.mean([r["loss/mse"] for r in rows[:5]])
    last = np.mean([r["loss/mse"] for r in rows[-5:]])
    assert last < 0.7 * first  # it learns
    cfg = checkpoint.load_run_config(run)
    assert (
        cfg["kind"] == "tokenizer"
        and cfg["model"]["res"] == RES
        and cfg["data"]["held_out"] == 0.25
    )
    assert "Trained steps 1–30" in capsys.readouterr().out

    # Resume to more steps continues the same run.
    assert (
        main(
            [
                "train",
                "tokenizer",
                *common,
                "--steps",
                "35",
                "--ema",
                "--ema-decay",
                "0.9",
                "--resume",
            ]
        )
        == 0
    )
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 36))

    # tokenize: latents beside the frames, equal to encoding each episode whole with the EMA weights.
    assert (
        main(
            [
                "tokenize",
                "--tokenizer",
                str(run),
                "--data",
                str(dataset),
                "--batch-size",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    ds = open_dataset(dataset)
    model = checkpoint.load_model(run)
    n_z, d_z = model.cfg.n_z, model.cfg.d_z
    ep = ds[2]
    assert ep.latents.shape == (len(ep), n_z, d_z) and ep.latents.dtype == np.float16
    with torch.no_grad():
        whole = model.encode(
            torch.from_numpy(np.array(ep.frames)).permute(0, 3, 1, 2)[None].float() / 255, 0.0
        )[0]
    assert np.allclose(ep.latents.astype(np.float32), whole.numpy(), atol=2e-3)
    assert ep.meta["latents_meta"]["tokenizer_config"] == cfg["model"]

    # eval tokenizer: JSON + PNG, numbers in range.
    assert (
        main(
            [
                "eval",
                "tokenizer",
                "--tokenizer",
                str(run),
                "--data",
                str(dataset),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "PSNR (dB)" in table and "linear-probe R² hp" in table
    report = json.loads((run / "eval" / "tokenizer_eval.json").read_text())
    assert (
        report["held_out_episodes"] >= 1
        and report["held_out_frames"] == 20 * report["held_out_episodes"]
    )
    assert 5 < report["psnr"] < 100 and -1 <= report["ssim"] <= 1
    assert set(report["probe"]) == {"hp", "gold", "level"}
    png = (run / "eval" / "tokenizer_recon.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["max_frames"] == 256
    # --max-frames caps each episode from its start; 0 = whole episodes; negative is refused.
    base = ["eval", "tokenizer", "--tokenizer", str(run), "--data", str(dataset), "--device", "cpu"]
    for cap, per_episode in ((5, 5), (0, 20)):
        out = run / f"eval_cap{cap}"
        assert main([*base, "--max-frames", str(cap), "--out", str(out)]) == 0
        rep = json.loads((out / "tokenizer_eval.json").read_text())
        assert rep["held_out_frames"] == per_episode * rep["held_out_episodes"]
        assert rep["max_frames"] == (cap or None)
    capsys.readouterr()
    assert main([*base, "--max-frames", "-1", "--out", str(run / "bad")]) == 1
    assert "max_frames must be ≥ 0" in capsys.readouterr().err


def test_stream_encoding_handles_ragged_batches(dataset):
    """Episodes of different lengths batched together give the same latents as one at a time."""
    from lol_dreamer.models import build_tokenizer
    from lol_dreamer.models.tokenizer_config import TokenizerConfig

    model = build_tokenizer(TokenizerConfig.preset("test", res=RES).to_dict()).eval()
    ds = open_dataset(dataset)
    eps = [ds[0], ds[1], ds[2]]
    together = {
        i: lat
        for i, lat, _ in encode_episodes(model, eps, batch_size=3, max_frames=None, progress=False)
    }
    capped = [min(len(e), n) for e, n in zip(eps, (20, 7, 13))]
    for i, ep in enumerate(eps):
        ((_, alone, _),) = list(
            encode_episodes(model, [ep], batch_size=1, max_frames=capped[i], progress=False)
        )
        assert np.allclose(together[i][: capped[i]], alone, atol=1e-5)


def test_tokenizer_training_resumes_exactly(tmp_path, dataset):
    """MAE masks and running-RMS normalisers included: an interrupted run continues bit-for-bit."""
    from lol_dreamer.data import SequenceSampler
    from lol_dreamer.models import build_tokenizer
    from lol_dreamer.models.tokenizer_config import TokenizerConfig
    from lol_dreamer.objectives.tokenizer_loss import TokenizerLoss
    from lol_dreamer.training import TrainConfig, train
    from lol_dreamer.training.tokenizer_job import TokenizerObjective

    cfg = TokenizerConfig.preset("test", res=RES).to_dict()
    sampler = SequenceSampler(open_dataset(dataset), 3, 2, seed=0, fields=("frames",))
    tcfg = TrainConfig(steps=8, lr=3e-3, save_every=4, ema_decay=0.5, device="cpu", progress=False)

    class Stop(TokenizerObjective):
        def __call__(self, model, batch, step):
            if step == 6:
                raise KeyboardInterrupt
            return super().__call__(model, batch, step)

    def run(out, objective, resume=False):
        torch.manual_seed(0)
        model = build_tokenizer(cfg)
        return train(
            model,
            objective,
            sampler,
            tcfg,
            out,
            run_config={"kind": "tokenizer", "model": cfg},
            resume=resume,
        )

    full = run(tmp_path / "full", TokenizerObjective(TokenizerLoss(lpips_weight=0.0)))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", Stop(TokenizerLoss(lpips_weight=0.0)))
    resumed = run(
        tmp_path / "cut", TokenizerObjective(TokenizerLoss(lpips_weight=0.0)), resume=True
    )
    assert resumed.start_step == 4 and resumed.losses == full.losses[4:]
    a = checkpoint.load_model(tmp_path / "full")
    b = checkpoint.load_model(tmp_path / "cut")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_probe_context_explains_a_negative_r2():
    """A held-out field that barely varies (level 5 or 6) makes even good probes score badly."""
    from lol_dreamer.evaluation.metrics import r2_score
    from lol_dreamer.evaluation.tokenizer_eval import probe_context

    train_y = np.arange(1.0, 8.0)[:, None]  # levels 1..7
    held_y = np.array([5.0, 5.0, 6.0, 6.0])[:, None]
    pred = held_y + np.array([0.5, -0.5, 0.5, -0.5])[:, None]  # off by half a level
    r2 = r2_score(held_y, pred)
    ctx = probe_context(["level"], train_y, held_y, r2)
    assert r2[0] == pytest.approx(0.0)
    assert ctx["held_out_std"]["level"] == pytest.approx(0.5)
    assert ctx["train_std"]["level"] == pytest.approx(2.0)
    assert ctx["rmse"]["level"] == pytest.approx(float(np.sqrt(((pred - held_y) ** 2).mean())))
    assert ctx["train_mean_r2"]["level"] == pytest.approx(1 - 2.5 / 0.25)  # mean 4 vs 5,5,6,6


def test_mae_ratio_flag_reaches_the_saved_config(tmp_path, dataset, capsys):
    common = ["--data", str(dataset), "--preset", "test", "--batch-size", "2", "--seq-len", "2",
              "--lpips-weight", "0", "--eval-every", "0", "--save-every", "2", "--steps", "2",
              "--held-out", "0.25", "--device", "cpu"]  # fmt: skip
    assert (
        main(["train", "tokenizer", "--out", str(tmp_path / "a"), *common, "--mae-max-ratio", "0"])
        == 0
    )
    assert checkpoint.load_run_config(tmp_path / "a")["model"]["mae_max_ratio"] == 0.0
    assert main(["train", "tokenizer", "--out", str(tmp_path / "b"), *common]) == 0
    assert checkpoint.load_run_config(tmp_path / "b")["model"]["mae_max_ratio"] == 0.9
    assert (
        main(
            ["train", "tokenizer", "--out", str(tmp_path / "c"), *common, "--mae-max-ratio", "1.5"]
        )
        != 0
    )
    assert "mae_max_ratio must be in [0, 1)" in capsys.readouterr().err
