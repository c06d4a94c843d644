"""Tokenizer loss: running-RMS normaliser, raw terms, offline LPIPS weights and their errors."""

from __future__ import annotations

import pytest
import torch

from lol_dreamer.objectives import lpips_weights
from lol_dreamer.objectives.lpips_weights import (
    LPIPSWeightsMissing,
    build_lpips,
    find_vgg16_weights,
)
from lol_dreamer.objectives.rms import RunningRMS
from lol_dreamer.objectives.tokenizer_loss import TokenizerLoss


def test_running_rms_maths():
    rms = RunningRMS(decay=0.9, eps=0.0)
    x1, x2 = torch.tensor([1.0, 3.0]), torch.tensor(2.0)
    out1 = rms.normalize(x1)
    ema1 = (1 + 9) / 2  # first value initialises the average
    torch.testing.assert_close(out1, x1 / ema1**0.5)
    out2 = rms.normalize(x2)
    ema2 = 0.9 * ema1 + 0.1 * 4.0
    torch.testing.assert_close(out2, x2 / ema2**0.5)
    assert rms.count.item() == 2 and rms.rms == pytest.approx(ema2**0.5)
    same = rms.normalize(torch.tensor(5.0), update=False)
    torch.testing.assert_close(same, torch.tensor(5.0) / ema2**0.5)
    assert rms.count.item() == 2


def test_running_rms_gradient_flows_through_value_only():
    rms = RunningRMS()
    x = torch.tensor(3.0, requires_grad=True)
    rms.normalize(x).backward()
    torch.testing.assert_close(x.grad, torch.tensor(1 / 3.0))


def test_running_rms_state_round_trip_resumes_exactly():
    a = RunningRMS(decay=0.95)
    for v in (1.0, 4.0, 2.0):
        a.update(torch.tensor(v))
    b = RunningRMS(decay=0.95)
    b.load_state_dict(a.state_dict())
    for v in (7.0, 0.5):
        torch.testing.assert_close(
            a.normalize(torch.tensor(v)), b.normalize(torch.tensor(v)), rtol=0, atol=0
        )


def test_mse_only_raw_term_and_normalised_total():
    loss_fn = TokenizerLoss(lpips_weight=0.0)
    recon, target = torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 3, 8, 8)
    total, terms = loss_fn(recon, target)
    mse = ((recon - target) ** 2).mean()
    assert set(terms) == {"mse"}
    torch.testing.assert_close(terms["mse"], mse)
    torch.testing.assert_close(total, torch.tensor(1.0))  # first step: the term divided by itself
    total2, terms2 = loss_fn(recon * 0, target)
    mse2 = (target**2).mean()
    torch.testing.assert_close(terms2["mse"], mse2)
    torch.testing.assert_close(total2, mse2 / (0.99 * mse**2 + 0.01 * mse2**2).sqrt())
    state = loss_fn.rms_state()
    fresh = TokenizerLoss(lpips_weight=0.0)
    fresh.load_rms_state(state)
    torch.testing.assert_close(fresh(recon, target)[0], loss_fn(recon, target)[0], rtol=0, atol=0)


def test_missing_weights_error_names_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert find_vgg16_weights() is None
    with pytest.raises(LPIPSWeightsMissing) as info:
        TokenizerLoss(lpips_weight=0.2)
    msg = str(info.value)
    assert "--lpips-weight 0" in msg and "--lpips-weights PATH" in msg
    assert str(tmp_path / "th" / "hub" / "checkpoints") in msg  # says where it looked
    with pytest.raises(LPIPSWeightsMissing, match=r"nowhere\.pth"):
        TokenizerLoss(lpips_weight=0.2, lpips_weights_path=tmp_path / "nowhere.pth")
    assert isinstance(info.value, RuntimeError)
    TokenizerLoss(lpips_weight=0.0)  # the MSE-only way out needs no weights


def _fake_vgg16_file(path):
    """A file laid out like torchvision's vgg16-*.pth (random values, right keys and shapes)."""
    import torchvision

    with torch.device("meta"):
        vgg = torchvision.models.vgg16(weights=None)
    state = {
        k: torch.randn(v.shape) * 0.05
        for k, v in vgg.state_dict().items()
        if k.startswith("features.")
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_torch_home_weights_are_found_and_loaded_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    target = tmp_path / "th" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    state = _fake_vgg16_file(target)
    assert find_vgg16_weights() == target
    assert find_vgg16_weights(target.parent) == target and find_vgg16_weights(target) == target

    def no_download(*args, **kwargs):
        raise AssertionError("LPIPS construction tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    model = build_lpips()
    torch.testing.assert_close(model.net.slice1[0].weight, state["features.0.weight"])
    torch.testing.assert_close(getattr(model.net.slice5, "28").bias, state["features.28.bias"])
    # LPIPS's own calibration layers come from the lpips package, not random
    import lpips

    lin = torch.load(lpips_weights._lin_weights_file(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.lin0.model[1].weight, lin["lin0.model.1.weight"])
    assert not any(p.requires_grad for p in model.parameters())
    assert isinstance(model, lpips.LPIPS)


def test_wrong_file_is_rejected(tmp_path):
    bad = tmp_path / "vgg16-bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match="does not look like torchvision's VGG16"):
        build_lpips(bad)


def test_lpips_term_with_random_backbone_plumbing():
    with pytest.raises(LPIPSWeightsMissing):
        build_lpips(weights_path="/nonexistent/vgg16.pth")
    loss_fn = TokenizerLoss(
        lpips_weight=0.2, lpips_weights_path="/nonexistent", allow_random_backbone=True
    )
    loss_fn.train()
    assert not loss_fn.lpips.training  # LPIPS dropout stays off
    target = torch.rand(1, 2, 3, 32, 32)
    recon = target.clone().requires_grad_(True)
    total, terms = loss_fn(recon, target)
    assert set(terms) == {"mse", "lpips"}
    assert terms["lpips"].abs() < 1e-6 and terms["mse"] == 0  # identical images
    recon2 = (target + 0.2 * torch.randn_like(target)).requires_grad_(True)
    total, terms = loss_fn(recon2, target)
    ref = loss_fn.lpips(
        recon2.reshape(-1, 3, 32, 32), target.reshape(-1, 3, 32, 32), normalize=True
    ).mean()
    torch.testing.assert_close(terms["lpips"], ref.detach())
    total.backward()
    assert recon2.grad is not None and recon2.grad.abs().sum() > 0
