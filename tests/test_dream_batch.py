"""DreamBatch decoding dtype: the "auto" rule, bf16 frames against fp32 ones, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lol_dreamer
from lol_dreamer.envs.dream import DreamEnv
from lol_dreamer.envs.dream_batch import DreamBatch, native_bf16, resolve_decode_dtype

RES = 16


@pytest.fixture(scope="module")
def cnn_world_model(tmp_path_factory):
    """A tiny world model with a CNN tokenizer whose decoder draws more than mid-grey."""
    from lol_dreamer.models import build_tokenizer
    from lol_dreamer.models.dynamics import DynamicsConfig, DynamicsModel
    from lol_dreamer.models.tokenizer_config import TokenizerConfig
    from lol_dreamer.world_model import save_world_model

    torch.manual_seed(0)
    tcfg = TokenizerConfig.preset("test", res=RES, arch="cnn")
    tok = build_tokenizer(tcfg.to_dict()).eval()
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(0.1 * torch.randn_like(p))
    dcfg = DynamicsConfig.preset("test", n_z=tcfg.n_z, d_z=tcfg.d_z, context=6)
    starts = {
        "latents": torch.rand(4, 3, tcfg.n_z, tcfg.d_z).mul(2).sub(1).half(),
        "actions": torch.zeros(4, 3, 9, dtype=torch.long),
        "tasks": torch.arange(4) % 3,
    }
    path = save_world_model(
        tmp_path_factory.mktemp("cnn_wm") / "wm",
        model=DynamicsModel(dcfg),
        model_config=dcfg.to_dict(),
        tokenizer=tok,
        tokenizer_config=tcfg.to_dict(),
        starts=starts,
    )
    return lol_dreamer.load_world_model(path)


def test_auto_decode_dtype_is_bf16_only_for_cnn_on_native_bf16_cpus():
    cpu = torch.device("cpu")
    assert resolve_decode_dtype("auto", cpu, "transformer") == torch.float32
    expected = torch.bfloat16 if native_bf16(cpu) else torch.float32
    assert resolve_decode_dtype("auto", cpu, "cnn") == expected
    assert resolve_decode_dtype(None, cpu, "cnn") == expected
    assert resolve_decode_dtype("float32", cpu, "cnn") == torch.float32
    assert resolve_decode_dtype("bfloat16", cpu, "transformer") == torch.bfloat16
    assert not native_bf16(torch.device("meta"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_decode_dtype("float16x", cpu, "cnn")


def _rollout(wm, decode_dtype: str, seed: int = 3, steps: int = 8):
    env = DreamEnv(world_model=wm, decode_dtype=decode_dtype, torch_threads=None)
    obs, _ = env.reset(seed=seed)
    frames, latents = [obs], []
    space = lol_dreamer.action_space()
    space.seed(seed)
    for _ in range(steps):
        obs, *_ = env.step(space.sample())
        frames.append(obs)
        latents.append(env.batch.latent.clone())
    return np.stack(frames), torch.stack(latents)


def test_bf16_decoding_changes_frames_by_a_few_levels_only(cnn_world_model):
    f32, z32 = _rollout(cnn_world_model, "float32")
    b16, zb16 = _rollout(cnn_world_model, "bfloat16")
    assert torch.equal(z32, zb16)  # the dream itself is untouched
    diff = np.abs(f32.astype(int) - b16.astype(int))
    assert f32.std() > 5  # frames have content, not a flat grey
    assert diff.max() <= 4 and (diff == 0).mean() > 0.5
    again, _ = _rollout(cnn_world_model, "bfloat16")
    assert np.array_equal(b16, again)  # same seed, same frames


def test_stateless_decoder_skips_undecoded_steps(cnn_world_model):
    wm = cnn_world_model
    batch = DreamBatch(wm, 2, decode=True, decode_dtype="float32")
    st = wm.starts
    batch.reset(None, st.latents[:2].float(), st.actions[:2], st.tasks[:2])
    t0 = batch.decoder.t
    act = torch.zeros(2, 9, dtype=torch.long)
    assert batch.step(act, decode=False).frames is None
    out = batch.step(act)
    assert batch.decoder.t == t0 + 2
    ref = wm.tokenizer.decode(out.latent[:, None])[:, 0]
    assert torch.equal(out.frames, (ref * 255).round().to(torch.uint8).permute(0, 2, 3, 1))


@pytest.mark.parametrize("decode_dtype", ["float32", "bfloat16"])
def test_decoding_on_a_worker_thread_gives_identical_frames(cnn_world_model, decode_dtype):
    wm = cnn_world_model
    st = wm.starts
    act = torch.tensor([[3, 1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0]])
    runs = []
    for overlap in (False, True):
        batch = DreamBatch(wm, 2, decode=True, decode_dtype=decode_dtype, overlap_decode=overlap)
        batch.seed(5)
        batch.reset(None, st.latents[:2].float(), st.actions[:2], st.tasks[:2])
        steps = [batch.step(act) for _ in range(4)]
        assert (batch._pool is not None) == overlap  # the worker really ran the decodes
        batch.close()
        runs.append(steps)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a.latent, b.latent) and torch.equal(a.frames, b.frames)
        assert a.frames.float().std() > 5


def test_overlap_decode_defaults_to_cpu_with_one_thread_and_two_cores(cnn_world_model, monkeypatch):
    import lol_dreamer.envs.dream_batch as db

    batch = DreamBatch(cnn_world_model, 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(db, "_usable_cores", lambda: 2)
        assert batch._overlapping()
        monkeypatch.setattr(db, "_usable_cores", lambda: 1)
        assert not batch._overlapping()
        torch.set_num_threads(2)
        monkeypatch.setattr(db, "_usable_cores", lambda: 2)
        assert not batch._overlapping()
    finally:
        torch.set_num_threads(threads)
