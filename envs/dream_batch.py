"""N dreams stepped as one batch: the engine shared by ``DreamEnv``, ``DreamVectorEnv`` and the TorchRL env.

One :class:`DreamBatch` owns a KV-cached sampler state and a streaming decoder for ``N`` streams on one
device. ``reset(rows, ...)`` restarts some streams from start clips while the others keep dreaming;
``step(actions)`` runs K shortcut steps for every stream, then (optionally) decodes the new frames and
reads the agent heads. There is no Python loop over streams anywhere on the step path.

Dimension letters: ``N`` streams, ``M`` streams being reset, ``C`` context frames, ``n``/``c`` latent
tokens / channels (``n_z``/``d_z``), ``H``/``W`` frame size, ``d`` agent-token width.
"""

from __future__ import annotations

import contextlib
import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from lol_dreamer.actions import ACTION_DIM, N_MOVE
from lol_dreamer.world_model import WorldModel


@dataclass
class DreamStep:
    """What one batched step produced (all tensors on the world model's device).

    Attributes:
        latent: ``float32 [N, n, c]`` the new frames' latents.
        agent_features: ``float32 [N, d]`` agent-token features, or None without agent tokens.
        reward: ``float32 [N]`` reward-head prediction (zeros without heads).
        continue_prob: ``float32 [N]`` p(episode goes on) (ones without heads).
        frames: ``uint8 [N, H, W, 3]`` decoded frames, or None when decoding is off.
    """

    latent: Tensor
    agent_features: Tensor | None
    reward: Tensor
    continue_prob: Tensor
    frames: Tensor | None


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` / ``"float32"`` / ``"bfloat16"`` (or the torch dtypes) → a torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def to_uint8_frames(x: Tensor) -> Tensor:
    """Decoder output ``[N, 3, H, W]`` in [0, 1] → ``uint8 [N, H, W, 3]``."""
    return (x.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


@functools.cache
def _usable_cores() -> int:
    """CPU cores this process may run on (read once: it is consulted on every dream step)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` is a CPU with native bf16 arithmetic (AVX512-BF16 or AMX), where oneDNN
    runs bf16 convolutions ≈ 1.5–2× faster than fp32."""
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_decode_dtype(
    decode_dtype: torch.dtype | str | None, device: torch.device, arch: str
) -> torch.dtype:
    """The decoder's compute dtype: ``"auto"``/None = bf16 autocast for a CNN tokenizer (``arch``)
    on a CPU with native bf16, fp32 otherwise; anything else as :func:`parse_dtype`.

    bf16 decoding changes a frame by at most a few 8-bit levels (on the trained ``nano`` CNN
    tokenizer: 65 dB PSNR against fp32 decoding, 91 % of values identical, 9 % off by one level),
    far below the tokenizer's own reconstruction error (≈ 31 dB), and cuts the 128 px decode time
    on one Zen 4 core from ≈ 30–37 ms to ≈ 19 ms.
    """
    if decode_dtype is None or decode_dtype == "auto":
        return torch.bfloat16 if arch == "cnn" and native_bf16(device) else torch.float32
    return parse_dtype(decode_dtype)


class DreamBatch:
    """``N`` dreams on one device.

    Args:
        wm: the world model.
        num_envs: ``N``.
        k: denoising steps per frame (default the model's).
        context_length: frames of context kept in the KV cache (default the model's).
        decode: decode frames on every step (turn off when only latents / agent features are needed).
        dtype: dynamics compute dtype, ``float32`` (default) or ``bfloat16`` (autocast: slower at
            batch 1 on a CPU, faster for large batches on a CPU with native bf16, see
            ``benchmarks/RESULTS.md``).
        decode_dtype: decoder compute dtype, ``"auto"`` (default; see :func:`resolve_decode_dtype`),
            ``float32`` or ``bfloat16``.
        overlap_decode: decode each new frame on a worker thread while the sampler's last pass (the
            one that enters the frame into the KV cache, independent of the decode) runs on this one.
            None (default) = on a CPU with at least two cores when torch runs one intra-op thread
            (the batch-1 setting), where the two passes then use a core each; results are identical
            either way.
    """

    def __init__(
        self,
        wm: WorldModel,
        num_envs: int,
        *,
        k: int | None = None,
        context_length: int | None = None,
        decode: bool = True,
        dtype: torch.dtype | str | None = None,
        decode_dtype: torch.dtype | str | None = "auto",
        overlap_decode: bool | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be ≥ 1, got {num_envs}")
        self.wm = wm
        self.num_envs = num_envs
        self.device = wm.device
        self.k = int(k or wm.k)
        self.context_length = int(context_length or wm.context_length)
        self.decode = decode
        arch = getattr(getattr(wm.tokenizer, "cfg", None), "arch", "transformer")
        self.decode_dtype = resolve_decode_dtype(decode_dtype, self.device, arch)
        self.sampler = wm.sampler(
            k=self.k, context_length=self.context_length, dtype=parse_dtype(dtype)
        )
        self.state = None
        self.decoder = wm.tokenizer.decoder_stream(num_envs) if decode else None
        self.tasks = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        # Step noise and reset (context) noise come from separate generators, so restarting some
        # streams never shifts the random draws of the others.
        self.generator = torch.Generator(device=self.device)
        self.reset_generator = torch.Generator(device=self.device)
        self.seed(0)
        self.latent: Tensor | None = None
        self.agent_features: Tensor | None = None
        self.overlap_decode = overlap_decode
        self._pool: ThreadPoolExecutor | None = None

    def _overlapping(self) -> bool:
        if self.overlap_decode is not None:
            return self.overlap_decode
        return self.device.type == "cpu" and torch.get_num_threads() == 1 and _usable_cores() >= 2

    def _decode_frames(self, z: Tensor) -> Tensor:
        with torch.no_grad():  # grad mode is per thread
            return to_uint8_frames(self._decode_step(self.decoder, z))

    def close(self) -> None:
        """Stop the decode worker thread (if one was started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _decode_step(self, decoder: object, z: Tensor) -> Tensor:
        """One streaming-decoder step on latents ``[M, n, c]`` in :attr:`decode_dtype`."""
        ctx = (
            torch.autocast(self.device.type, dtype=self.decode_dtype)
            if self.decode_dtype != torch.float32
            else contextlib.nullcontext()
        )
        with ctx:
            return decoder.step(z)

    def seed(self, seed: int) -> None:
        """Seed the torch generators every sampling draw comes from."""
        seed = int(seed) % (2**63)
        self.generator.manual_seed(seed)
        self.reset_generator.manual_seed(seed ^ 0x5EED_D8EA)

    # -------------------------------------------------------------------------------------------
    # Starting

    def _check_start(
        self, latents: Tensor, actions: Tensor, tasks: Tensor, m: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        wm = self.wm
        if (
            latents.ndim != 4
            or tuple(latents.shape[2:]) != (wm.n_z, wm.d_z)
            or latents.shape[0] != m
        ):
            raise ValueError(
                f"start latents must be [{m}, C, {wm.n_z}, {wm.d_z}], got {tuple(latents.shape)}"
            )
        c = latents.shape[1]
        if tuple(actions.shape) != (m, c, ACTION_DIM):
            raise ValueError(f"start actions must be [{m}, {c}, 9], got {tuple(actions.shape)}")
        if tuple(tasks.shape) != (m,):
            raise ValueError(f"start tasks must be [{m}], got {tuple(tasks.shape)}")
        dev = self.device
        return (
            latents.to(dev, torch.float32),
            actions.to(dev, torch.long),
            tasks.to(dev, torch.long),
        )

    @torch.no_grad()
    def reset(
        self,
        rows: Tensor | None,
        latents: Tensor,
        actions: Tensor,
        tasks: Tensor,
        labeled: Tensor | None = None,
    ) -> Tensor | None:
        """Restart the streams ``rows`` from start clips; the other streams are untouched.

        Args:
            rows: ``bool [N]`` streams to restart, or None for all of them.
            latents: ``[M, C, n, c]`` context latents, M = number of restarted streams.
            actions: ``int64 [M, C, 9]`` stored-alignment actions (``actions[:, t]`` after frame t).
            tasks: ``int64 [M]`` task ids.
            labeled: ``bool [M, C]`` which context actions are known (default all).
        Returns:
            ``uint8 [M, H, W, 3]``, the decoded last context frame of each restarted stream (None when
            decoding is off).
        """
        n = self.num_envs
        if rows is None:
            rows = torch.ones(n, dtype=torch.bool, device=self.device)
        rows = rows.to(self.device, torch.bool)
        m = int(rows.sum())
        if m == 0:
            return None
        latents, actions, tasks = self._check_start(latents, actions, tasks, m)
        if labeled is not None:
            labeled = labeled.to(self.device, torch.bool)
        idx = rows.nonzero()[:, 0]
        self.tasks[idx] = tasks
        if self.state is None or m == n:
            if m != n:
                raise ValueError("the first reset must restart every stream")
            self.state = self.sampler.start(
                latents, actions, labeled, task=tasks, generator=self.reset_generator
            )
        else:
            self.sampler.reset_streams(
                self.state,
                rows,
                latents,
                actions,
                labeled,
                task=tasks,
                generator=self.reset_generator,
            )
        last = latents[:, -1]
        if self.latent is None:
            self.latent = torch.zeros(n, self.wm.n_z, self.wm.d_z, device=self.device)
        self.latent[idx] = last
        self.agent_features = _features(self.state.agent)
        if not self.decode:
            return None
        return self._prime_decoder(rows, idx, latents)

    def _prime_decoder(self, rows: Tensor, idx: Tensor, latents: Tensor) -> Tensor:
        """Feed the context latents through the streaming decoder of the restarted rows.

        Returns the decoded last context frame ``uint8 [M, H, W, 3]``.
        """
        dec = self.decoder
        c = latents.shape[1]
        if len(idx) == self.num_envs:
            dec.reset()
            dec.t = 0
            for t in range(c):
                frame = self._decode_step(dec, latents[:, t])
            return to_uint8_frames(frame)
        # A fresh stream for the restarted rows, positioned so its last frame sits just before the
        # main stream's next one, then spliced into the main stream's per-frame cache.
        tmp = self.wm.tokenizer.decoder_stream(len(idx))
        tmp.t = dec.t - c
        for t in range(c):
            frame = self._decode_step(tmp, latents[:, t])
        if hasattr(dec, "frames"):  # stateless (per-frame) decoders keep no history to splice
            splice_decoder_rows(dec, tmp, rows)
        return to_uint8_frames(frame)

    # -------------------------------------------------------------------------------------------
    # Stepping

    @torch.no_grad()
    def step(
        self, actions: Tensor, decode: bool | None = None, validate: bool | None = None
    ) -> DreamStep:
        """Advance every stream by one frame.

        Args:
            actions: ``int64 [N, 9]`` (movement 0..18, keys 0/1).
            decode: override the batch's decode setting for this step (only ``False`` is allowed when
                the batch was built without a decoder).
            validate: check the action ranges (default: on CPU only, since the check synchronises an
                accelerator every step).
        Returns:
            :class:`DreamStep`.
        """
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        a = actions.to(self.device, torch.long)
        if tuple(a.shape) != (self.num_envs, ACTION_DIM):
            raise ValueError(
                f"actions must be int64 [{self.num_envs}, 9] = [movement, 8 keys], got {tuple(a.shape)}"
            )
        if validate is None:
            validate = self.device.type == "cpu"
        if validate and bool(
            (
                (a[:, 0] < 0) | (a[:, 0] >= N_MOVE) | (a[:, 1:] < 0).any(1) | (a[:, 1:] > 1).any(1)
            ).any()
        ):
            raise ValueError("action out of range: movement must be 0..18 and keys 0/1")
        decode_now = self.decode if decode is None else decode
        if decode_now and self.decoder is None:
            raise ValueError(
                "this dream batch was built with decode=False; it cannot decode frames"
            )
        pending: list[Future] = []
        on_frame = None
        if decode_now and self._overlapping():
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    1, thread_name_prefix="dream-decode", initializer=torch.set_num_threads,
                    initargs=(1,),
                )  # fmt: skip
            pool = self._pool

            def on_frame(z_new: Tensor) -> None:
                pending.append(pool.submit(self._decode_frames, z_new))

        try:
            z, feats = self.sampler.step(self.state, a, generator=self.generator, on_frame=on_frame)
        except BaseException:
            for f in pending:  # let the decoder finish before the error leaves this step
                f.exception()
            raise
        z = z.float()
        self.latent = z
        self.agent_features = _features(feats)
        n = self.num_envs
        if self.wm.heads is not None and self.agent_features is not None:
            reward = self.wm.reward(self.agent_features)
            cont = self.wm.continue_prob(self.agent_features)
        else:
            reward = torch.zeros(n, device=self.device)
            cont = torch.ones(n, device=self.device)
        frames = None
        if decode_now:
            frames = pending[0].result() if pending else self._decode_frames(z)
        elif self.decoder is not None:
            if getattr(self.decoder, "stateless", False):
                self.decoder.t += 1  # a per-frame decoder has no history to keep in step
            else:
                self._decode_step(self.decoder, z)  # keep the decoder's history in step
        return DreamStep(
            latent=z,
            agent_features=self.agent_features,
            reward=reward,
            continue_prob=cont,
            frames=frames,
        )


def _features(agent: Tensor | None) -> Tensor | None:
    """Sampler agent-token outputs ``[N, S_g, d]`` → head inputs ``[N, d]`` (mean over the S_g tokens)."""
    return None if agent is None else agent.float().mean(dim=1)


def splice_decoder_rows(dst: object, src: object, rows: Tensor) -> None:
    """Copy the per-frame key/value history of stream ``src`` (``M`` rows) into rows ``rows`` of ``dst``.

    Both are ``DecoderStream`` objects of the same tokenizer. Histories are aligned at their newest
    frame; ``dst`` frames older than ``src``'s history become invalid for those rows.
    """
    idx = rows.nonzero()[:, 0]
    d_frames, s_frames = dst.frames, src.frames
    # Grow dst's history (invalid for every row) when src remembers more frames than dst.
    while len(d_frames) < len(s_frames) and len(d_frames) < (d_frames.maxlen or 0):
        kv_ref, _ = s_frames[0]
        b = dst.batch
        empty = [(k.new_zeros(b, *k.shape[1:]), v.new_zeros(b, *v.shape[1:])) for k, v in kv_ref]
        d_frames.appendleft((empty, torch.zeros(b, dtype=torch.bool, device=idx.device)))
    for j in range(1, len(d_frames) + 1):
        kv_d, valid_d = d_frames[-j]
        if j <= len(s_frames):
            kv_s, valid_s = s_frames[-j]
            for (kd, vd), (ks, vs) in zip(kv_d, kv_s):
                kd[idx] = ks.to(kd.dtype)
                vd[idx] = vs.to(vd.dtype)
            valid_d[idx] = valid_s.to(valid_d.device)
        else:
            valid_d[idx] = False
