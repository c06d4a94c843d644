import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from lol_dreamer.training.run_log import read_metrics

HERE = Path(__file__).parent


def test_two_process_cpu_torchrun_keeps_ranks_identical(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "_ddp_toy_train.py"), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # Both ranks log the same (all-reduced) loss; only rank 0 wrote the run folder, one row per step.
    assert (tmp_path / "losses0.txt").read_text() == (tmp_path / "losses1.txt").read_text()
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(1, 9))
    state = (tmp_path / "run" / "state" / "trainer.json").read_text()
    assert '"world_size": 2' in state
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == [
        "config.json", "metrics.jsonl", "model.safetensors", "state"]  # fmt: skip
