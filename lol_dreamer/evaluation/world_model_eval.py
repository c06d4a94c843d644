"""Open-loop world-model evaluation on held-out episodes (SPEC §9), and the rollout helpers it uses.

From fixed contexts (``C`` true frames, evenly spaced through each held-out episode) the world model
dreams ``H`` frames with the true future actions, then again with those actions shuffled in time
(same noise); the frames are decoded and compared with the truth by
:func:`lol_dreamer.evaluation.world_model_report.rollout_report`. With agent heads, the reward head's
prediction at every dreamed frame is compared with the true task reward.

Alignment: a window of ``C + H`` stored frames gives context frames ``0..C-1`` (their actions enter
the sampler's context), future actions ``actions[C-1 : C-1+H]`` (``actions[C-1+f]`` leads into dreamed
frame ``f``), true frames ``frames[C : C+H]`` and rewards ``rewards[C-1 : C-1+H]``: the distance-0
reward head on dreamed frame f (slot ``C+f``) predicts the reward of the transition into it,
``rewards[C-1+f]``, the reward of future action f (slot alignment by
:func:`lol_dreamer.models.heads.to_slots`, as in phase 2).

Dimension letters: ``N`` rollouts, ``C`` context, ``F`` dreamed frames, ``n`` = n_z, ``c`` = d_z.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lol_dreamer.evaluation.world_model_report import (
    DEFAULT_HORIZONS,
    format_report,
    plot_report,
    rollout_report,
)
from lol_dreamer.io import atomic_write_json
from lol_dreamer.models.heads import to_slots


@torch.no_grad()
def decode_latents(tokenizer: Any, z: Tensor) -> np.ndarray:
    """Decode ``z [N, T, n, c]`` frame by frame through the tokenizer's decoder stream.

    Streaming keeps memory bounded for long clips (the decoder is causal in time).

    Returns:
        ``uint8 [N, T, H, W, 3]``.
    """
    n, t = z.shape[:2]
    dev = next(tokenizer.parameters()).device
    stream = tokenizer.decoder_stream(n)
    out = []
    for i in range(t):
        f = stream.step(z[:, i].to(dev).float())  # N 3 H W in [0, 1]
        out.append((f.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())
    return torch.stack(out, 1).numpy()


@torch.no_grad()
def open_loop(
    wm: Any,
    context_latents: Tensor,
    context_actions: Tensor,
    future_actions: Tensor,
    task: Tensor | None = None,
    k: int | None = None,
    seed: int = 0,
    on_frame: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Dream ``F`` frames from true contexts with given future actions.

    Args:
        wm: a :class:`lol_dreamer.world_model.WorldModel`.
        context_latents: ``[N, C, n, c]``; context_actions: ``int64 [N, C, 9]`` (stored alignment).
        future_actions: ``int64 [N, F, 9]``; ``[:, f]`` leads into dreamed frame f.
        task: ``int64 [N]`` for the agent tokens, or None.
        k: denoising steps per frame (default: the world model's).
        seed: noise seed (equal seeds give equal noise, so two action sequences compare fairly).
        on_frame: called with ``N`` after every dreamed frame (progress reporting).
    Returns:
        ``(z [N, F, n, c], h [N, F, d] or None)``: dreamed latents and agent features.
    """
    from lol_dreamer.models.agent_model import agent_features

    dev = wm.device
    sampler = wm.sampler(k=k)
    g = torch.Generator(device=dev).manual_seed(seed)
    state = sampler.start(
        context_latents.to(dev).float(), context_actions.to(dev), task=task, generator=g
    )
    zs, hs = [], []
    for f in range(future_actions.shape[1]):
        z, agent = sampler.step(state, future_actions[:, f].to(dev), generator=g)
        zs.append(z)
        if agent is not None:
            hs.append(agent_features(agent[:, None])[:, 0])
        if on_frame is not None:
            on_frame(z.shape[0])
    return torch.stack(zs, 1), (torch.stack(hs, 1) if hs else None)


def held_out_episodes(wm: Any, dataset: Any) -> tuple[Any, str]:
    """The dataset's episodes the world model was not trained on, and a note saying how they were chosen.

    On the world model's own training dataset these are the episodes it held out; any other
    dataset is taken as unseen as a whole.
    """
    data = wm.config.get("data") or {}
    root = Path(dataset.root).resolve()
    # An exported (bundled) model keeps only its dataset's folder name, not the machine's path.
    exported = wm.config.get("exported_default") and data.get("path") == root.name
    if data.get("path") != str(root) and not exported:
        return dataset, f"all {len(dataset)} episodes of {dataset.root}"
    held = set(data.get("held_out_episodes") or [])
    idx = [i for i, n in enumerate(dataset.names) if n in held]
    if not idx:
        raise ValueError(
            f"{dataset.root} is the world model's training data and none of its held-out episodes is in it; "
            "evaluate on a separately collected dataset (`lol-dreamer collect --out DIR --seed N`)"
        )
    return dataset.subset(idx), f"the {len(idx)} episodes held out from training"


def pick_windows(
    lengths: list[int], context: int, horizon: int, per_episode: int
) -> list[tuple[int, int]]:
    """``per_episode`` evenly spaced windows of ``context + horizon`` frames per episode (fixed, no RNG)."""
    span = context + horizon
    out = []
    for e, t in enumerate(lengths):
        if t < span:
            continue
        starts = np.linspace(0, t - span, per_episode).round().astype(int)
        out += [(e, int(s)) for s in sorted(set(starts.tolist()))]
    return out


def evaluate_world_model(
    wm: Any,
    dataset: Any,
    episodes: int | None = 8,
    contexts: int = 4,
    k: int | None = None,
    horizons: tuple[int, ...] = DEFAULT_HORIZONS,
    seed: int = 0,
    batch: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """Every SPEC §9 dynamics measure of a world model on held-out episodes.

    Args:
        wm: the world model.
        dataset: an opened dataset (its held-out episodes are used when it is the training data).
        episodes: at most this many episodes (None = all).
        contexts: fixed contexts per episode.
        k: denoising steps per frame.
        horizons: horizons of the tables; the rollouts last ``max(horizons)`` frames, or as long as
            the episodes allow.
        seed: dream noise seed; shuffling seed.
        batch: rollouts dreamed side by side.
        progress: show a progress bar of dreamed frames (true and shuffled actions).
    Returns:
        The report dict (see :func:`rollout_report`) plus ``setup`` (what was evaluated).
    """
    eps, note = held_out_episodes(wm, dataset)
    if episodes is not None:
        eps = eps.subset(range(min(episodes, len(eps))))
    c = wm.context_length
    lengths = [int(x) for x in eps.lengths]
    longest = max(lengths) if lengths else 0
    horizon = min(max(horizons), longest - c)
    if horizon < 1:
        raise ValueError(
            f"held-out episodes need more than {c} frames (the context) to evaluate; the longest has {longest}"
        )
    wins = pick_windows(lengths, c, horizon, contexts)
    task_id = wm.config.get("task_id")
    from lol_dreamer.evaluation.rollout_metrics import shuffle_actions

    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {
        k_: [] for k_ in ("pred", "true", "last", "shuf", "rec", "r_pred", "r_true")
    }
    from tqdm.auto import tqdm

    bar = tqdm(total=2 * len(wins) * horizon, unit="frame", desc="dreaming", disable=not progress)
    t0, frames_made = time.perf_counter(), 0
    for i in range(0, len(wins), batch):
        chunk = wins[i : i + batch]
        lat = torch.from_numpy(
            np.stack(
                [np.asarray(eps[e].latents[s : s + c + horizon], np.float32) for e, s in chunk]
            )
        )
        act = torch.from_numpy(
            np.stack([np.asarray(eps[e].actions[s : s + c + horizon], np.int64) for e, s in chunk])
        )
        frames = np.stack([np.asarray(eps[e].frames[s : s + c + horizon]) for e, s in chunk])
        tasks = torch.tensor(
            [int(eps[e].task) if task_id is None else int(task_id) for e, _ in chunk]
        )
        fut = act[:, c - 1 : c - 1 + horizon]
        shuf = torch.from_numpy(shuffle_actions(fut.numpy(), rng))
        z, h = open_loop(wm, lat[:, :c], act[:, :c], fut, tasks, k, seed + i, bar.update)
        z_s, _ = open_loop(wm, lat[:, :c], act[:, :c], shuf, tasks, k, seed + i, bar.update)
        frames_made += 2 * z.shape[0] * horizon
        ctx = lat[:, :c].to(wm.device)
        parts["pred"].append(decode_latents(wm.tokenizer, torch.cat((ctx, z), 1))[:, c:])
        parts["shuf"].append(decode_latents(wm.tokenizer, torch.cat((ctx, z_s), 1))[:, c:])
        parts["rec"].append(decode_latents(wm.tokenizer, lat.to(wm.device))[:, c:])
        parts["true"].append(frames[:, c:])
        parts["last"].append(frames[:, c - 1])
        if h is not None and wm.has_heads:
            parts["r_pred"].append(
                wm.heads.reward.predict(h.to(wm.device), 0).float().cpu().numpy()
            )
            rew = torch.from_numpy(
                np.stack(
                    [np.asarray(eps[e].rewards[s : s + c + horizon], np.float32) for e, s in chunk]
                )
            )
            rew_slots, _ = to_slots(rew)  # slot c + f holds rewards[s + c − 1 + f]
            rew = rew_slots[:, c : c + horizon].numpy()
            parts["r_true"].append(rew[np.arange(len(chunk)), :, tasks.numpy()])
    seconds = time.perf_counter() - t0
    bar.close()
    cat = {k_: np.concatenate(v) if v else None for k_, v in parts.items()}
    detect = _detector()
    report = rollout_report(
        cat["pred"], cat["true"], cat["last"], cat["shuf"], detect, horizons,
        pred_rewards=cat["r_pred"], true_rewards=cat["r_true"], recon=cat["rec"],
    )  # fmt: skip
    if detect is not None and report.get("champion_visible_rate", 0.0) == 0.0:
        report = rollout_report(
            cat["pred"],
            cat["true"],
            cat["last"],
            cat["shuf"],
            None,
            horizons,
            cat["r_pred"],
            cat["r_true"],
            cat["rec"],
        )
        report["note"] = (
            "the champion detector found the player in no true frame (not LaneSim data?); position measures skipped"
        )
    report["setup"] = {
        "episodes": note,
        "n_episodes": len(eps),
        "contexts_per_episode": contexts,
        "context_frames": c,
        "k": k or wm.k,
        "seed": seed,
        "dream_fps": frames_made / max(seconds, 1e-9),
        "world_model": str(wm.path),
        "reward_task": None if task_id is None else int(task_id),
        "windows": [[eps.names[e], s] for e, s in wins],
    }
    return report


def _detector() -> Any:
    """The LaneSim champion detector (imported lazily: the core never imports envs at import time)."""
    from lol_dreamer.envs.lane.detector import detect_player

    return detect_player


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lol-dreamer eval world-model`` (flags: :mod:`lol_dreamer.commands.eval_world_model`)."""
    from lol_dreamer.data import open_dataset
    from lol_dreamer.training.trainer import resolve_device
    from lol_dreamer.world_model import load_world_model

    wm = load_world_model(args.world_model, device=resolve_device(args.device))
    dataset = open_dataset(args.data)
    horizons = tuple(int(h) for h in args.horizons.split(","))
    report = evaluate_world_model(
        wm,
        dataset,
        args.episodes,
        args.contexts,
        args.k,
        horizons,
        args.seed,
        args.batch_size,
        progress=True,
    )
    out = Path(args.out) if args.out else Path(args.world_model) / "eval_world_model.json"
    atomic_write_json(out, report)
    png = plot_report(report, out.with_suffix(".png"))
    print(format_report(report))
    if "note" in report:
        print(f"note: {report['note']}")
    s = report["setup"]
    print(
        f"Evaluated {report['n_rollouts']} open-loop rollouts of {report['rollout_frames']} frames from "
        f"{s['context_frames']}-frame contexts ({s['episodes']}), K={s['k']}, at {s['dream_fps']:.1f} dreamed "
        f"frames/s. Report: {out}; plot: {png}."
    )
    return 0
