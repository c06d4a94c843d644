"""Launched by test_trainer_ddp.py under torchrun: trains the toy model on 2 CPU ranks."""

import os
import sys
from pathlib import Path

import torch
from _trainer_toys import RMSObjective, ToyData, build_toy
from safetensors.torch import save_file

from lol_dreamer.training import TrainConfig, train
from lol_dreamer.training.distributed import cleanup, get_info

if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    cfg = TrainConfig(steps=8, lr=1e-2, save_every=4, device="cpu", progress=False, ema_decay=0.5)
    model = build_toy({"d_in": 4, "hidden": 8, "seed": 0})
    # Give each rank a different initialisation: the trainer must broadcast rank 0's.
    torch.manual_seed(100 + int(os.environ["RANK"]))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    data = ToyData(rank=int(os.environ["RANK"]))
    res = train(
        model,
        RMSObjective(),
        data,
        cfg,
        out / "run",
        run_config={"kind": "toy", "model": {"d_in": 4, "hidden": 8}},
    )
    info = get_info()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(out / f"rank{info.rank}.safetensors"),
    )
    (out / f"losses{info.rank}.txt").write_text(" ".join(repr(x) for x in res.losses))
    cleanup()
