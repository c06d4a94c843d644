"""Load a trained world model from its folder: tokenizer + dynamics + optional agent heads + start clips.

A world-model folder (docs/architecture.md, "Run folder") is what ``lol-dreamer train dynamics`` or
``train agent`` writes; it is loaded from safetensors + JSON only (no pickle):

| file                      | what                                                                         |
|---------------------------|------------------------------------------------------------------------------|
| ``config.json``           | ``{"kind": "dynamics" or "agent", "model": {...}, "train": ..., "data": ...}``; optional ``"world_model": {"res", "fps", "k", "context", "tasks"}`` |
| ``model.safetensors``     | weights of the model ``kind`` builds (``"agent"``: dynamics with agent tokens + heads, keys ``dynamics.*`` / ``heads.*``) |
| ``tokenizer/``            | ``config.json`` + ``model.safetensors`` of the tokenizer the latents came from |
| ``starts.safetensors``    | held-out start clips: ``latents`` fp16 ``[N, C, n_z, d_z]``, ``actions`` int64 ``[N, C, 9]``, ``tasks`` int64 ``[N]`` |
| ``clips.safetensors``     | a few held-out clips with true ``frames`` uint8 ``[M, T, H, W, 3]`` (optional) |

:func:`save_world_model` writes this layout from in-memory parts (tests, exporters).

Example:
    >>> wm = load_world_model("runs/wm")                       # doctest: +SKIP
    >>> wm.res, wm.n_z, wm.d_z, wm.k, wm.context_length, wm.has_heads  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lol_dreamer.actions import ACTION_DIM, TASKS
from lol_dreamer.io import atomic_write_json

DEFAULT_DIR = Path(__file__).parent / "assets" / "default"
STARTS_FILE = "starts.safetensors"
CLIPS_FILE = "clips.safetensors"
TOKENIZER_DIR = "tokenizer"
DEFAULT_FPS = 20
# Model kinds a world-model folder's config.json may name (see lol_dreamer.checkpoint.BUILDERS).
WORLD_MODEL_BUILDERS = {
    "dynamics": "lol_dreamer.models.agent_model:build_dynamics_model",
    "agent": "lol_dreamer.models.agent_model:build_agent_model",
    "imagine": "lol_dreamer.models.agent_model:build_agent_model",
}
DEFAULT_K = 4


@dataclass
class StartClips:
    """Held-out start clips a dream can begin from.

    Attributes:
        latents: ``float16 [N, C, n_z, d_z]``.
        actions: ``int64 [N, C, 9]`` (``actions[:, t]`` taken after frame t, as in episodes).
        tasks: ``int64 [N]`` task ids (index into ``lol_dreamer.TASKS``).
    """

    latents: Tensor
    actions: Tensor
    tasks: Tensor

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    @property
    def context(self) -> int:
        return int(self.latents.shape[1])


@dataclass
class WorldModel:
    """Everything a dream needs, on one device, in eval mode.

    Attributes:
        tokenizer: encodes frames ``[b, t, 3, H, W]`` in [0, 1] to latents and decodes them back.
        dynamics: the dynamics transformer (driven through :meth:`sampler`).
        heads: ``AgentHeads`` (policy / reward / continue) or ``None`` for a dynamics-only model.
        starts: held-out :class:`StartClips`.
        clips: held-out clips with true frames (``frames``, ``latents``, ``actions``, …) or ``None``.
        config: the folder's ``config.json``.
        path: the folder.
        res: frame side in pixels; fps: frames per second of the training data.
        k: default denoising steps per frame; context_length: frames of context the dynamics reads.
        tasks: task names (index = task id).
    """

    tokenizer: nn.Module
    dynamics: nn.Module
    heads: nn.Module | None
    starts: StartClips
    clips: dict[str, Tensor] | None
    config: dict[str, Any]
    path: Path | None
    res: int
    fps: int = DEFAULT_FPS
    k: int = DEFAULT_K
    context_length: int = 16
    tasks: tuple[str, ...] = TASKS
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def n_z(self) -> int:
        return int(self.tokenizer.cfg.n_z)

    @property
    def d_z(self) -> int:
        return int(self.tokenizer.cfg.d_z)

    @property
    def has_heads(self) -> bool:
        return self.heads is not None

    def sampler(
        self,
        k: int | None = None,
        context_length: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> Any:
        """A KV-cached autoregressive sampler over :attr:`dynamics` (``lol_dreamer.sampler.Sampler``).

        Args:
            k: denoising steps per frame (default :attr:`k`).
            context_length: frames kept in the KV cache (default :attr:`context_length`).
            dtype: compute dtype (default float32).
        """
        from lol_dreamer.sampler import Sampler

        return Sampler(
            self.dynamics,
            k=k or self.k,
            context=context_length or self.context_length,
            dtype=dtype or torch.float32,
        )

    @torch.no_grad()
    def encode_frames(self, frames: Tensor) -> Tensor:
        """Frames ``uint8 [N, C, H, W, 3]`` → latents ``float32 [N, C, n_z, d_z]``."""
        if frames.ndim != 5 or frames.shape[-1] != 3 or frames.shape[2:4] != (self.res, self.res):
            raise ValueError(
                f"frames must be uint8 [N, C, {self.res}, {self.res}, 3] for this world model, "
                f"got {tuple(frames.shape)}; resize them to the model resolution"
            )
        x = frames.to(self.device).permute(0, 1, 4, 2, 3).float() / 255.0
        return self.tokenizer.encode(x).float()

    @torch.no_grad()
    def reward(self, agent_features: Tensor) -> Tensor:
        """Reward-head prediction (MTP distance 0) for ``agent_features [N, d]`` → ``[N]``."""
        if self.heads is None:
            raise ValueError(
                "this world model has no agent heads; train it with `lol-dreamer train agent`"
            )
        return self.heads.reward.predict(agent_features, 0).float()

    @torch.no_grad()
    def continue_prob(self, agent_features: Tensor) -> Tensor:
        """Continue-head probability that the episode goes on, ``[N]``."""
        if self.heads is None:
            raise ValueError(
                "this world model has no agent heads; train it with `lol-dreamer train agent`"
            )
        return self.heads.cont.prob(agent_features, 0).float()

    def to(self, device: str | torch.device) -> WorldModel:
        self.device = torch.device(device)
        self.tokenizer.to(self.device)
        self.dynamics.to(self.device)
        if self.heads is not None:
            self.heads.to(self.device)
        return self


# ---------------------------------------------------------------------------------------------
# Loading


def _resolve(path: str | os.PathLike | None) -> Path:
    if path is None:
        if (DEFAULT_DIR / "config.json").exists():
            return DEFAULT_DIR
        raise FileNotFoundError(
            "no default world model is bundled with this install yet (lol_dreamer/assets/default/ is "
            "empty); pass checkpoint=PATH (or --world-model PATH) pointing at a world-model folder "
            "written by `lol-dreamer train dynamics`"
        )
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"world model folder {p} does not exist; pass the folder written by `lol-dreamer train dynamics`"
        )
    return p


def _read_tensors(path: Path, required: bool = True) -> dict[str, Tensor] | None:
    from lol_dreamer.checkpoint import load_state_dict_file

    if not path.exists():
        if not required:
            return None
        raise FileNotFoundError(
            f"{path} not found: {path.parent} is not a complete world model; retrain or re-export it with "
            "`lol-dreamer train dynamics` (it writes tokenizer/, starts.safetensors and clips.safetensors)"
        )
    return load_state_dict_file(path)


def _load_starts(path: Path, n_z: int, d_z: int) -> StartClips:
    t = _read_tensors(path)
    missing = {"latents", "actions", "tasks"} - set(t)
    if missing:
        raise ValueError(
            f"{path} lacks {sorted(missing)}; the file is damaged — re-export the world model"
        )
    lat, act, tasks = t["latents"], t["actions"].long(), t["tasks"].long()
    n, c = lat.shape[:2]
    if lat.ndim != 4 or tuple(lat.shape[2:]) != (n_z, d_z) or n == 0 or c == 0:
        raise ValueError(
            f"{path}: latents have shape {tuple(lat.shape)} but the tokenizer makes [N, C, {n_z}, {d_z}]; "
            "the start clips come from another tokenizer — re-export them with this world model's tokenizer"
        )
    if tuple(act.shape) != (n, c, ACTION_DIM) or tuple(tasks.shape) != (n,):
        raise ValueError(
            f"{path}: actions {tuple(act.shape)} / tasks {tuple(tasks.shape)} do not match latents "
            f"{tuple(lat.shape)} (expected [N, C, 9] and [N]); the file is damaged — re-export it"
        )
    return StartClips(latents=lat.half(), actions=act, tasks=tasks)


def _split_heads(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """An agent run's model → (dynamics, heads); a dynamics model → (model, None)."""
    heads = getattr(model, "heads", None)
    dyn = getattr(model, "dynamics", None)
    if isinstance(heads, nn.Module):
        return (dyn if isinstance(dyn, nn.Module) else model), heads
    return model, None


def load_world_model(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> WorldModel:
    """Load a world-model folder (safetensors + JSON only).

    Args:
        path: the folder written by ``lol-dreamer train dynamics`` / ``train agent``; ``None`` = the
            default model bundled at ``lol_dreamer/assets/default/``.
        device: where to put the models.
    Returns:
        A :class:`WorldModel` in eval mode with frozen parameters (``requires_grad=False``); a
        trainer that fine-tunes a part re-enables gradients on that part.
    Raises:
        FileNotFoundError: the folder or one of its files is missing (the message names it).
        ValueError: a file is damaged or does not match its config (the message names file and fix).
    """
    from lol_dreamer.checkpoint import BUILDERS, load_model, load_run_config, register_builder

    for kind, target in WORLD_MODEL_BUILDERS.items():
        if kind not in BUILDERS:
            register_builder(kind, target)
    root = _resolve(path)
    device = torch.device(device)
    cfg = load_run_config(root)
    tok_dir = root / TOKENIZER_DIR
    if not (tok_dir / "config.json").exists():
        raise FileNotFoundError(
            f"{tok_dir / 'config.json'} not found: a world model carries a copy of its tokenizer; "
            "re-export the folder with `lol-dreamer train dynamics`"
        )
    tokenizer = load_model(tok_dir, device=device)
    dynamics, heads = _split_heads(load_model(root, device=device))
    n_z, d_z = int(tokenizer.cfg.n_z), int(tokenizer.cfg.d_z)
    starts = _load_starts(root / STARTS_FILE, n_z, d_z)
    clips = _read_tensors(root / CLIPS_FILE, required=False)
    meta = cfg.get("world_model", {}) or {}
    dyn_cfg = cfg.get("model") or {}
    dyn_cfg = dyn_cfg.get("dynamics", dyn_cfg)
    context = int(
        meta.get("context")
        or dyn_cfg.get("context")
        or (cfg.get("train") or {}).get("context")
        or starts.context
    )
    wm = WorldModel(
        tokenizer=tokenizer.eval(),
        dynamics=dynamics.eval(),
        heads=heads,
        starts=starts,
        clips=clips,
        config=cfg,
        path=root,
        res=int(meta.get("res", tokenizer.cfg.res)),
        fps=int(meta.get("fps", DEFAULT_FPS)),
        k=int(meta.get("k", DEFAULT_K)),
        context_length=context,
        tasks=tuple(meta.get("tasks", TASKS)),
        device=device,
    )
    for module in (wm.tokenizer, wm.dynamics, wm.heads):
        if module is not None:
            module.requires_grad_(False)
    return wm


# ---------------------------------------------------------------------------------------------
# Saving


def save_world_model(
    out: str | os.PathLike,
    *,
    model: nn.Module,
    model_config: dict[str, Any],
    tokenizer: nn.Module,
    tokenizer_config: dict[str, Any],
    starts: StartClips | dict[str, Tensor],
    clips: dict[str, Tensor] | None = None,
    kind: str = "dynamics",
    fps: int = DEFAULT_FPS,
    k: int = DEFAULT_K,
    context: int | None = None,
    train: dict[str, Any] | None = None,
    data: Any = None,
) -> Path:
    """Write a complete world-model folder that :func:`load_world_model` reads.

    Args:
        out: destination folder (created).
        model, model_config: ``kind="dynamics"``: a ``DynamicsModel`` and its ``DynamicsConfig`` dict;
            ``kind="agent"``: an ``AgentWorldModel`` and ``{"dynamics": ..., "heads": ...}``.
        tokenizer, tokenizer_config: the tokenizer and its config dict.
        starts: start clips (``latents`` ``[N, C, n_z, d_z]``, ``actions`` ``[N, C, 9]``, ``tasks`` ``[N]``).
        clips: optional held-out clips with true frames.
        kind: ``"dynamics"`` or ``"agent"``.
        fps, k, context: dream metadata (``context`` defaults to the dynamics config's).
        train, data: provenance stored in config.json.
    Returns:
        The folder.
    """
    from lol_dreamer.checkpoint import save_state_dict, save_weights

    if kind not in WORLD_MODEL_BUILDERS:
        raise ValueError(f"kind must be one of {sorted(WORLD_MODEL_BUILDERS)}, got {kind!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir = out / TOKENIZER_DIR
    tok_dir.mkdir(exist_ok=True)
    atomic_write_json(tok_dir / "config.json", {"kind": "tokenizer", "model": tokenizer_config})
    save_weights(tok_dir / "model.safetensors", tokenizer, tokenizer_config)
    s = (
        starts
        if isinstance(starts, StartClips)
        else StartClips(**{k_: starts[k_] for k_ in ("latents", "actions", "tasks")})
    )
    save_state_dict(
        out / STARTS_FILE,
        {"latents": s.latents.half(), "actions": s.actions.long(), "tasks": s.tasks.long()},
    )
    if clips is not None:
        save_state_dict(out / CLIPS_FILE, clips)
    dyn_cfg = model_config.get("dynamics", model_config)
    cfg: dict[str, Any] = {
        "kind": kind,
        "model": model_config,
        "train": train or {},
        "data": data,
        "world_model": {
            "res": int(tokenizer_config["res"]),
            "fps": int(fps),
            "k": int(k),
            "context": int(context or dyn_cfg.get("context") or s.context),
            "tasks": list(TASKS),
        },
    }
    save_weights(out / "model.safetensors", model, model_config)
    atomic_write_json(out / "config.json", cfg)
    return out
