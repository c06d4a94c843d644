"""One ``lol-dreamer pipeline --quick`` run shared by the pipeline, export and demo tests.

The run is interrupted once, on purpose, in the middle of the tokenizer stage (a ``KeyboardInterrupt``
raised by the trainer right after its step-8 checkpoint), then the same call finishes it, so the
resume path is exercised by the very run the other tests inspect. The result is cached for the
whole pytest session (the test files share it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

INTERRUPT_AT = 8  # = QUICK["save_every"]: the tokenizer has just checkpointed step 8


@dataclass
class QuickRun:
    out: Path
    record: dict[str, Any]
    interrupted_record: dict[str, Any]
    resume_output: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


_CACHE: dict[str, QuickRun] = {}


def quick_config(out: Path, **kw: Any):
    from lol_dreamer.pipeline_config import PipelineConfig

    return PipelineConfig(out=str(out), quick=True, **kw)


def quick_run(tmp_path_factory: pytest.TempPathFactory, capsys: Any = None) -> QuickRun:
    """The shared quick pipeline (built on first use)."""
    if "run" in _CACHE:
        return _CACHE["run"]
    import io
    import json
    import time
    from contextlib import redirect_stdout

    from lol_dreamer.pipeline import run_pipeline
    from lol_dreamer.training import trainer as trainer_mod

    out = tmp_path_factory.mktemp("pipeline") / "RUN"
    cfg = quick_config(out)
    original = trainer_mod.Trainer._train_step

    def interrupting(self, step):
        if self.run_dir is not None and self.run_dir.name == "tokenizer" and step == INTERRUPT_AT:
            raise KeyboardInterrupt
        return original(self, step)

    t0 = time.perf_counter()
    trainer_mod.Trainer._train_step = interrupting
    try:
        with pytest.raises(KeyboardInterrupt):
            run_pipeline(cfg, quiet=True)
    finally:
        trainer_mod.Trainer._train_step = original
    interrupted = json.loads((out / "pipeline.json").read_text())
    buf = io.StringIO()
    with redirect_stdout(buf):
        record = run_pipeline(cfg)
    _CACHE["run"] = QuickRun(out, record, interrupted, buf.getvalue(), time.perf_counter() - t0)
    return _CACHE["run"]
