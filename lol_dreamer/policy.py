"""Trained policies as callables: load an agent run folder and act in any environment.

A :class:`Policy` is the policy head of :class:`~lol_dreamer.models.heads.AgentHeads` at one MTP
distance plus, optionally, a *feature extractor* that turns observed frames into agent-token
features ``h_t``. Called on features it acts directly (dream envs and TorchRL expose features);
called on frames it first feeds them through the extractor. :class:`WorldModelFeatures` is that
extractor for the real game: each frame is encoded by the world model's tokenizer and written into
the dynamics transformer's KV cache as a context frame (noised to τ_ctx, labelled with the action
that led to it, exactly as the sampler writes generated frames), and the agent tokens of that pass
are ``h_t``. No frames are generated, so one real step costs one tokenizer encode plus one
transformer pass.

Run folders :func:`load_policy` accepts (safetensors + JSON only):

| run                 | heads from                                           | world model from                   |
|---------------------|------------------------------------------------------|------------------------------------|
| phase 2 (``agent``) | ``model.safetensors`` keys ``heads.*`` (or ``heads.safetensors``) | the run itself (it is a world-model folder) |
| phase 3 (``imagine``) | ``model.safetensors`` (keys ``heads.*`` or bare) or ``heads.safetensors`` | ``config["world_model"]`` (a path) or the ``parent`` run |

The heads config is ``config["heads"]`` or ``config["model"]["heads"]``; the acting MTP distance is
``config["model"]["mtp_distance"]`` / ``config["act_distance"]`` (default 0); the task the agent
tokens are conditioned on defaults to ``config["task"]``.

Example:
    >>> policy = load_policy("runs/bc", task="farm")        # doctest: +SKIP
    >>> policy.reset()                                     # doctest: +SKIP
    >>> action = policy(frame)  # uint8 [H, W, 3] → int64 [9]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from lol_dreamer.actions import ACTION_DIM, TASK_INDEX
from lol_dreamer.models.heads import ActionDist, AgentHeads, HeadsConfig


class FeatureExtractor(Protocol):
    """Turns a stream of observed frames into agent features ``h_t [dim]``."""

    def reset(self, frame: np.ndarray) -> Tensor:
        """Start an episode at ``frame`` (uint8 ``[H, W, 3]``); returns ``h_0``."""
        ...

    def observe(self, action: np.ndarray, frame: np.ndarray) -> Tensor:
        """Record ``action`` (int64 ``[9]``, taken at the previous frame) and the new ``frame``; returns ``h_t``."""
        ...


class WorldModelFeatures:
    """Agent features of real frames through a world model's tokenizer and dynamics (KV-cached).

    Args:
        wm: a :class:`~lol_dreamer.world_model.WorldModel` whose dynamics has agent tokens.
        task: task id fed to the agent tokens.
        seed: seed of the context noise (frames are written at the noisy context level τ_ctx).
    """

    def __init__(self, wm: Any, task: int = 0, seed: int = 0) -> None:
        if int(getattr(wm.dynamics.cfg, "n_agent", 0)) < 1:
            raise ValueError(
                "this world model's dynamics has no agent tokens; load a phase-2 run "
                "(`lol-dreamer train agent`) to act from frames"
            )
        self.wm, self.task = wm, int(task)
        self.sampler = wm.sampler()
        self.generator = torch.Generator(device=wm.device).manual_seed(seed)
        self.state: Any = None
        self.encoder: Any = None

    def _encode(self, frame: np.ndarray) -> Tensor:
        """One frame ``uint8 [H, W, 3]`` → latents ``[1, 1, n_z, d_z]`` through the tokenizer's stream."""
        res = self.wm.res
        if frame.shape != (res, res, 3):
            raise ValueError(
                f"frames must be uint8 [{res}, {res}, 3] for this world model, got {frame.shape}; "
                f"render the environment at {res} px"
            )
        f = torch.as_tensor(np.ascontiguousarray(frame), device=self.wm.device)
        x = f.permute(2, 0, 1)[None].float() / 255.0  # [1, 3, H, W]
        return self.encoder.step(x).float()[:, None]

    def _features(self) -> Tensor:
        from lol_dreamer.models.agent_model import agent_features

        return agent_features(self.state.agent[:, None])[0, 0]  # [1, S_g, dim] → [dim]

    @torch.no_grad()
    def reset(self, frame: np.ndarray) -> Tensor:
        task = torch.tensor([self.task], device=self.wm.device)
        self.encoder = self.wm.tokenizer.encoder_stream(1)  # causal in time, like the clip path
        self.state = self.sampler.start(self._encode(frame), task=task, generator=self.generator)
        return self._features()

    @torch.no_grad()
    def observe(self, action: np.ndarray, frame: np.ndarray) -> Tensor:
        if self.state is None:
            raise RuntimeError("call reset(first_frame) before observe()")
        s, dev = self.sampler, self.wm.device
        # the real frame enters as context exactly like a generated one: noised to τ_ctx and
        # labelled with the action that led to it (slot t holds a_{t-1})
        ctx = s._renoise(s.model.normalize_latents(self._encode(frame)), self.generator)
        act = torch.as_tensor(np.asarray(action), dtype=torch.long, device=dev)
        act = act.view(1, 1, ACTION_DIM)
        lab = torch.ones(1, 1, dtype=torch.bool, device=dev)
        self.state.agent = s._write(self.state, ctx, act, lab, self.state.pos[:, None])
        self.state.pos = self.state.pos + 1
        return self._features()


class Policy:
    """The policy head at one MTP distance, optionally behind a frame → feature extractor.

    Args:
        heads: agent heads (only ``heads.policy`` is used).
        features: a :class:`FeatureExtractor` for acting from frames, or None (features only).
        mtp_distance: which policy output layer acts (0 = the next action).
        deterministic: act with the mode instead of sampling.
        seed: seed of the action sampling.
    """

    def __init__(
        self,
        heads: AgentHeads,
        features: FeatureExtractor | None = None,
        mtp_distance: int = 0,
        deterministic: bool = False,
        seed: int = 0,
    ) -> None:
        if not 0 <= mtp_distance <= heads.config.mtp:
            raise ValueError(f"mtp_distance must be in 0..{heads.config.mtp}, got {mtp_distance}")
        self.heads = heads.eval()
        self.features = features
        self.mtp_distance = mtp_distance
        self.deterministic = deterministic
        self.device = next(heads.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._last: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return self.heads.config.dim

    def reset(self) -> None:
        """Forget the current episode (the next frame starts a new one)."""
        self._last = None

    def dist(self, h: Tensor) -> ActionDist:
        """Action distribution for features ``h [..., dim]``."""
        return self.heads.policy(h.to(self.device).float(), self.mtp_distance)

    @torch.no_grad()
    def act_features(self, h: Tensor) -> Tensor:
        """Actions ``int64 [..., 9]`` for features ``h [..., dim]``."""
        d = self.dist(h)
        return d.mode() if self.deterministic else d.sample(self.generator)

    def _is_features(self, x: Any) -> bool:
        arr = x if isinstance(x, Tensor) else np.asarray(x)
        return (
            arr.dtype not in (np.uint8, torch.uint8) and arr.ndim >= 1 and arr.shape[-1] == self.dim
        )

    def __call__(self, obs_or_features: Any) -> Any:
        """Act on features (``[..., dim]`` float → int64 ``[..., 9]``, tensor in, tensor out) or on
        one frame (uint8 ``[H, W, 3]`` → ``np.int64 [9]``, tracking the episode; call :meth:`reset`
        between episodes)."""
        x = obs_or_features
        if self._is_features(x):
            return self.act_features(torch.as_tensor(x))
        if self.features is None:
            raise ValueError(
                f"this policy has no feature extractor, so it acts on agent features [..., {self.dim}] "
                f"only; got {np.asarray(x).shape} {np.asarray(x).dtype}. Load it with "
                "load_policy(run, world_model=True) to act from frames"
            )
        frame = np.asarray(x)
        if self._last is None:
            h = self.features.reset(frame)
        else:
            h = self.features.observe(self._last, frame)
        action = self.act_features(h).cpu().numpy().astype(np.int64)
        self._last = action
        return action

    def act(self, env: Any, last_action: np.ndarray | None = None) -> np.ndarray:
        """The next action ``int64 [9]`` for a Gymnasium env (``play --agent``, scripted-player style).

        Uses the env's agent features when it exposes ones of this width (``DreamEnv.agent_features``;
        the dream must run the world model this policy was trained with), else its current frame
        (``env.render()`` with ``render_mode="rgb_array"``) through the feature extractor.

        Args:
            env: the environment (any wrapper).
            last_action: the action actually taken at the previous frame when someone else (a human)
                was in control; by default the policy's own previous action.
        """
        u = getattr(env, "unwrapped", env)
        feats = getattr(u, "agent_features", None)
        if isinstance(feats, Tensor) and feats.shape[-1] == self.dim:
            return self.act_features(feats).cpu().numpy().astype(np.int64)
        frame = env.render()
        if not isinstance(frame, np.ndarray):
            raise ValueError(
                "the policy acts on the env's frame, but env.render() returned no image; "
                "make the env with render_mode='rgb_array'"
            )
        if last_action is not None and self._last is not None:
            self._last = np.asarray(last_action, dtype=np.int64)
        return self(frame)

    def as_torchrl_actor(
        self, in_key: str = "agent_features", out_key: str = "action", composite: bool = True
    ) -> Any:
        """A TorchRL ``TensorDictModule`` acting on ``in_key`` ``[..., dim]``.

        Args:
            in_key: features key (``DreamTorchEnv`` writes ``"agent_features"``).
            out_key: action key.
            composite: write ``(out_key, "move")`` ``[...]`` and ``(out_key, "keys")`` ``[..., 8]``
                (the ``DreamTorchEnv`` action spec); False writes one int64 ``[..., 9]`` tensor.
        Returns:
            The module; it also writes ``"action_log_prob"`` (differentiable when the heads
            require grad).
        """
        from tensordict.nn import TensorDictModule

        outs: list[Any] = [(out_key, "move"), (out_key, "keys")] if composite else [out_key]
        return TensorDictModule(
            _ActorNet(self, composite), in_keys=[in_key], out_keys=[*outs, "action_log_prob"]
        )


def split_action(action: Tensor) -> tuple[Tensor, Tensor]:
    """``int64 [..., 9]`` → ``(move [...], keys [..., 8])`` (the TorchRL composite layout)."""
    return action[..., 0], action[..., 1:]


def join_action(action: Any) -> Tensor:
    """A flat action ``[..., 9]``, or a TensorDict with ``move [...]`` and ``keys [..., 8]`` → ``int64 [..., 9]``."""
    if isinstance(action, Tensor):
        return action.long()
    move, keys = action.get("move"), action.get("keys")
    return torch.cat((move.long().unsqueeze(-1), keys.long()), dim=-1)


class _ActorNet(nn.Module):
    def __init__(self, policy: Policy, composite: bool) -> None:
        super().__init__()
        self.heads = policy.heads
        self.policy = policy
        self.composite = composite

    def forward(self, h: Tensor) -> tuple[Tensor, ...]:
        d = self.policy.dist(h)
        with torch.no_grad():
            a = d.mode() if self.policy.deterministic else d.sample(self.policy.generator)
        logp = d.log_prob(a)
        return (*split_action(a), logp) if self.composite else (a, logp)


# ---------------------------------------------------------------------------------------------
# Loading


def _heads_config(cfg: dict[str, Any]) -> dict[str, Any]:
    hc = cfg.get("heads") or (cfg.get("model") or {}).get("heads")
    if not isinstance(hc, dict):
        raise ValueError(
            "config.json has no heads config ('heads' or 'model.heads'); this is not an agent run — "
            "pass a folder written by `lol-dreamer train agent` or `train imagine`"
        )
    return hc


def load_heads(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> AgentHeads:
    """The :class:`AgentHeads` of a phase-2 or phase-3 run folder, in eval mode."""
    from lol_dreamer.checkpoint import load_run_config, load_state_dict_file

    run = Path(run_dir)
    cfg = load_run_config(run)
    heads = AgentHeads(HeadsConfig.from_dict(_heads_config(cfg)))
    path = run / "heads.safetensors"
    if not path.exists():
        path = run / "model.safetensors"
    state = load_state_dict_file(path)
    sub = {k[len("heads.") :]: v for k, v in state.items() if k.startswith("heads.")} or state
    if any(k.startswith("value.") for k in sub):
        heads.add_value_head()
    own = heads.state_dict()
    missing = [k for k in own if k not in sub]
    bad = [k for k in own if k in sub and tuple(sub[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        raise ValueError(
            f"{path} does not hold these agent heads (missing {missing[:5]}, shape mismatch {bad[:5]}); "
            "the heads config in config.json does not match the weights — point at the run that wrote them"
        )
    heads.load_state_dict({k: sub[k] for k in own})
    return heads.to(device).eval().requires_grad_(False)


def _resolve_path(p: str, base: Path) -> Path:
    q = Path(p)
    if not q.is_absolute() and not q.exists() and (base / q).exists():
        return base / q
    return q


def world_model_dir(run_dir: str | os.PathLike) -> Path:
    """The world-model folder an agent run acts through (itself, ``world_model`` or its ``parent``)."""
    from lol_dreamer.checkpoint import load_run_config

    run = Path(run_dir)
    seen: set[Path] = set()
    while run.resolve() not in seen:
        seen.add(run.resolve())
        if (run / "tokenizer" / "config.json").exists():
            return run
        cfg = load_run_config(run)
        nxt = (
            cfg.get("world_model") if isinstance(cfg.get("world_model"), str) else cfg.get("parent")
        )
        if not isinstance(nxt, str):
            break
        run = _resolve_path(nxt, run.parent)
    raise FileNotFoundError(
        f"no world model found for {run_dir}: it is not a world-model folder and names no "
        "'world_model' or 'parent' run that is; pass the phase-2 run folder"
    )


def load_policy(
    run_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    task: int | str | None = None,
    mtp_distance: int | None = None,
    deterministic: bool = False,
    seed: int = 0,
    world_model: bool = True,
) -> Policy:
    """Load a phase-2 or phase-3 agent run as a :class:`Policy`.

    Args:
        run_dir: the agent run folder.
        device: where to run it.
        task: task id or name the agent tokens are conditioned on (default: the run's ``task``,
            else 0 = farm).
        mtp_distance: policy output layer to act with (default: the run's ``model.mtp_distance``
            or ``act_distance``, else 0).
        deterministic: act with the mode.
        seed: seed of action sampling and context noise.
        world_model: also load the world model so the policy acts from frames.
    Returns:
        A :class:`Policy`; ``policy(frame) → int64 [9]`` when ``world_model`` is True.
    """
    from lol_dreamer.checkpoint import load_run_config

    cfg = load_run_config(run_dir)
    heads = load_heads(run_dir, device)
    if mtp_distance is None:
        model_cfg, train_cfg = cfg.get("model") or {}, cfg.get("train") or {}
        mtp_distance = int(
            model_cfg.get("mtp_distance", cfg.get("act_distance", train_cfg.get("mtp_distance", 0)))
        )
    if task is None:
        task = cfg.get("task") if cfg.get("task") in TASK_INDEX else int(cfg.get("task_id", 0))
    if isinstance(task, str) and task not in TASK_INDEX:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_INDEX)}")
    task_id = TASK_INDEX[task] if isinstance(task, str) else int(task)
    features = None
    if world_model:
        from lol_dreamer.world_model import load_world_model

        wm = load_world_model(world_model_dir(run_dir), device=device)
        features = WorldModelFeatures(wm, task=task_id, seed=seed)
    return Policy(
        heads, features, mtp_distance=mtp_distance, deterministic=deterministic, seed=seed
    )
