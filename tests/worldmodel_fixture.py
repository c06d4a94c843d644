"""Shared fixture: a tiny world-model folder from the ``test`` presets, written the real way.

The weights are random (plumbing tests), but every file goes through ``save_world_model`` /
``save_weights`` and back through ``load_world_model``, so the loader path is the real one.

Example:
    >>> path = make_world_model(tmp_path / "wm", heads=True)          # doctest: +SKIP
    >>> env = gym.make("LoLDream-v0", checkpoint=str(path))           # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lol_dreamer.actions import ACTION_NVEC, TASKS

RES = 16


def synthetic_frames(n: int, t: int, res: int = RES, seed: int = 0) -> torch.Tensor:
    """Moving coloured squares, ``uint8 [n, t, res, res, 3]`` (distinct per clip)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.zeros(n, t, res, res, 3, dtype=torch.uint8)
    frames[..., 1] = 60
    side = max(res // 4, 2)
    for i in range(n):
        x0, y0 = torch.randint(0, res - side, (2,), generator=g).tolist()
        color = torch.randint(80, 256, (3,), generator=g, dtype=torch.int64).to(torch.uint8)
        for j in range(t):
            x, y = (x0 + j) % (res - side), (y0 + j // 2) % (res - side)
            frames[i, j, y : y + side, x : x + side] = color
    return frames


def random_actions(n: int, t: int, seed: int = 0) -> torch.Tensor:
    """Uniform random actions ``int64 [n, t, 9]``."""
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randint(0, int(k), (n, t, 1), generator=g) for k in ACTION_NVEC]
    return torch.cat(cols, dim=-1)


def make_world_model(
    out: str | Path,
    *,
    res: int = RES,
    heads: bool = False,
    n_starts: int = 6,
    start_frames: int = 4,
    context: int = 6,
    seed: int = 0,
    tokenizer_preset: str = "test",
    dynamics_preset: str = "test",
    reward_scale: float = 0.05,
    continue_bias: float = 4.0,
    continue_scale: float = 0.0,
) -> Path:
    """Write a tiny world-model folder and return its path.

    Args:
        out: destination folder.
        res: frame side (a multiple of 8).
        heads: build an agent world model (agent tokens + policy / reward / continue heads).
        n_starts: stored start clips; start_frames: frames per start clip.
        context: the dynamics context length.
        seed: weight and data seed.
        tokenizer_preset, dynamics_preset: size presets (``nano`` for benchmarks).
        reward_scale: std of the reward head's output weights (0 keeps the untrained zero prediction).
        continue_bias: continue-head output bias (logit of "goes on"; negative → episodes end at once).
        continue_scale: std of the continue head's output weights.
    Returns:
        The folder.
    """
    from lol_dreamer.models import build_tokenizer
    from lol_dreamer.models.agent_model import AgentWorldModel
    from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel
    from lol_dreamer.models.heads import HeadsConfig
    from lol_dreamer.models.tokenizer_config import TokenizerConfig
    from lol_dreamer.world_model import save_world_model

    torch.manual_seed(seed)
    tcfg = TokenizerConfig.preset(tokenizer_preset, res=res)
    tok = build_tokenizer(tcfg.to_dict()).eval()
    to_pixels = getattr(tok, "to_pixels", None)
    if isinstance(to_pixels, torch.nn.Linear):  # zero-initialised (mid-grey); give frames content
        with torch.no_grad():
            to_pixels.weight.normal_(0.0, 0.3)
    dcfg = DynamicsConfig.preset(
        dynamics_preset, n_z=tcfg.n_z, d_z=tcfg.d_z, context=context, n_agent=1 if heads else 0
    )
    if heads:
        model = AgentWorldModel(dcfg, HeadsConfig.preset(dynamics_preset, dim=dcfg.dim))
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed + 1)
            w = model.heads.reward.out.weight
            w.copy_(torch.randn(w.shape, generator=g) * reward_scale)
            cw = model.heads.cont.out.weight
            cw.copy_(torch.randn(cw.shape, generator=g) * continue_scale)
            model.heads.cont.out.bias.fill_(continue_bias)
        model_config, kind = model.config, "agent"
    else:
        model = DynamicsModel(dcfg)
        model_config, kind = dcfg.to_dict(), "dynamics"
    frames = synthetic_frames(n_starts, start_frames, res, seed)
    with torch.no_grad():
        latents = tok.encode(frames.permute(0, 1, 4, 2, 3).float() / 255.0)
    starts = {
        "latents": latents.half(),
        "actions": random_actions(n_starts, start_frames, seed),
        "tasks": torch.arange(n_starts) % len(TASKS),
    }
    clips = {
        "frames": frames[:2].contiguous(),
        "latents": latents[:2].half().contiguous(),
        "actions": starts["actions"][:2].contiguous(),
        "tasks": starts["tasks"][:2].contiguous(),
    }
    return save_world_model(
        out,
        model=model,
        model_config=model_config,
        tokenizer=tok,
        tokenizer_config=tcfg.to_dict(),
        starts=starts,
        clips=clips,
        kind=kind,
        context=context,
    )


def make_phase3_run(
    parent: str | Path, out: str | Path, heads: Any = None, **model_extra: Any
) -> tuple[Path, Any]:
    """Write a phase-3 (kind ``imagine``) run: heads with a value head and a random policy layer.

    The folder holds only the heads; the world model comes through ``parent``, as a real
    ``train imagine`` run does.

    Args:
        parent: the phase-2 run whose heads are extended (a world model with heads).
        out: folder to create.
        heads: the parent's heads already loaded (default: :func:`lol_dreamer.policy.load_heads`).
        **model_extra: further ``config.json["model"]`` entries (e.g. ``mtp_distance=1``).

    Returns:
        ``(run folder, the heads written)``.
    """
    from lol_dreamer.checkpoint import save_state_dict
    from lol_dreamer.io import atomic_write_json
    from lol_dreamer.policy import load_heads

    heads = load_heads(parent) if heads is None else heads
    heads.add_value_head()
    with torch.no_grad():
        heads.policy.out.weight.normal_(0, 1.0)
    out = Path(out)
    out.mkdir()
    save_state_dict(
        out / "model.safetensors", {f"heads.{k}": v for k, v in heads.state_dict().items()}
    )
    atomic_write_json(
        out / "config.json",
        {
            "kind": "imagine",
            "model": {"heads": heads.config.to_dict(), **model_extra},
            "parent": str(parent),
        },
    )
    return out, heads
