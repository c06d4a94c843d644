import numpy as np
import pytest
import torch

from lol_dreamer.evaluation.metrics import linear_probe_r2, psnr, r2_score, ssim
from lol_dreamer.evaluation.rollout_metrics import ssim_per_frame


def test_psnr_known_values():
    a = torch.zeros(2, 3, 3, 8, 8)
    b = torch.full_like(a, 0.1)  # MSE 0.01 → 20 dB
    assert torch.allclose(psnr(a, b), torch.full((2, 3), 20.0, dtype=torch.float64))
    assert psnr(a, a).isinf().all()
    assert float(psnr(a[0, 0], b[0, 0] * 255, data_range=255.0)) == pytest.approx(20.0)
    c = a.clone()
    c[..., 0, 0, :4] = 1.0  # 4 of 192 values off by 1 → MSE = 1/48
    assert float(psnr(a[0, 0], c[0, 0])) == pytest.approx(10 * np.log10(48))


def test_ssim_known_values():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    # Constant images a, b: SSIM = (2ab + C1) / (a² + b² + C1) exactly (both variances are 0).
    a, b = 0.2, 0.6
    c1 = 0.01**2
    got = ssim(
        torch.full((3, 10, 10), a, dtype=torch.float64),
        torch.full((3, 10, 10), b, dtype=torch.float64),
    )
    assert float(got) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)
    # Anti-correlated noise scores below uncorrelated noise, which scores below a slight perturbation.
    n = torch.rand(1, 1, 32, 32)
    assert (
        float(ssim(n, 1 - n))
        < float(ssim(n, torch.rand(1, 1, 32, 32)))
        < float(ssim(n, (n + 0.01).clamp(0, 1)))
    )
    with pytest.raises(ValueError, match="window"):
        ssim(torch.rand(3, 4, 4), torch.rand(3, 4, 4))


def test_ssim_matches_rollout_metrics_definition():
    rng = np.random.default_rng(0)
    p = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    t = np.clip(p.astype(int) + rng.integers(-30, 30, p.shape), 0, 255).astype(np.uint8)
    ref = ssim_per_frame(p, t)
    ours = ssim(
        torch.from_numpy(p).permute(0, 3, 1, 2) / 255.0,
        torch.from_numpy(t).permute(0, 3, 1, 2) / 255.0,
    )
    assert np.allclose(ours.numpy(), ref, atol=1e-9)


def test_r2_score():
    y = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    r2 = r2_score(y, y)
    assert r2[0] == 1.0 and np.isnan(r2[1])  # constant column is undefined
    assert r2_score(y[:, 0], np.full(3, 2.0)) == pytest.approx(0.0)


def test_probe_recovers_linear_target():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 30))
    w = rng.normal(size=(30, 3))
    y = x @ w + 0.01 * rng.normal(size=(400, 3))
    res = linear_probe_r2(x[:300], y[:300], x[300:], y[300:], train_groups=np.arange(300) // 30)
    assert res.r2.shape == (3,) and (res.r2 > 0.999).all()
    # More features than samples (the kernel path), as with flattened latents: features driven by
    # a few factors, target linear in them.
    f = rng.normal(size=(120, 5))
    x = f @ rng.normal(size=(5, 500)) + 0.01 * rng.normal(size=(120, 500))
    y = f @ rng.normal(size=(5, 1))
    res = linear_probe_r2(x[:100], y[:100], x[100:], y[100:])
    assert res.r2[0] > 0.99
    # An unrelated target gives R² ≈ 0 or below, not 1.
    noise = rng.normal(size=(400, 1))
    x = rng.normal(size=(400, 30))
    assert linear_probe_r2(x[:300], noise[:300], x[300:], noise[300:]).r2[0] < 0.1
