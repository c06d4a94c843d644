import torch

from lol_dreamer.models.twohot import TwoHot, symexp, symlog


def test_symlog_symexp_inverse():
    x = torch.tensor([-1e6, -123.4, -1.0, -1e-3, 0.0, 1e-3, 0.5, 7.0, 4e4], dtype=torch.float64)
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-12, atol=0)
    assert torch.allclose(symlog(symexp(x.clamp(-30, 30))), x.clamp(-30, 30), rtol=1e-12)
    assert symlog(torch.tensor(0.0)) == 0


def test_twohot_encode_is_two_hot_with_exact_mean():
    th = TwoHot()
    assert th.bins.shape == (255,) and th.bins[127] == 0
    x = torch.tensor([0.0, 0.3, -2.5, 17.0, 1000.0, -5e3])
    t = th.encode(x)
    assert t.shape == (6, 255)
    assert torch.allclose(t.sum(-1), torch.ones(6))
    assert ((t > 0).sum(-1) <= 2).all()
    nz = (t > 0).nonzero()
    for row in range(6):  # the non-zero bins are adjacent
        idx = nz[nz[:, 0] == row, 1]
        assert idx.max() - idx.min() <= 1
    assert torch.allclose((t * th.bins).sum(-1), symlog(x), atol=1e-5)


def test_twohot_round_trip_on_and_between_bins():
    th = TwoHot()
    on = symexp(th.bins[::7])
    mid = symexp((th.bins[:-1] + th.bins[1:])[::5] / 2)
    frac = symexp(th.bins[10:-10:9] + 0.3 * (th.bins[1] - th.bins[0]))
    for x in (on, mid, frac):
        x = x[x.abs() < 1e6]  # float32 keeps 6-7 digits
        dec = th.decode(th.encode(x).log())  # log(0) = -inf logits → exact probabilities
        assert torch.allclose(dec, x, rtol=2e-5, atol=1e-5), (dec - x).abs().max()
        assert torch.allclose(th.decode_probs(th.encode(x)), x, rtol=2e-5, atol=1e-5)


def test_twohot_clamps_outside_range_and_loss_is_cross_entropy():
    th = TwoHot(bins=5, low=-2.0, high=2.0)
    t = th.encode(torch.tensor([1e9, -1e9]))
    assert t[0, -1] == 1 and t[1, 0] == 1
    logits = torch.randn(3, 5)
    x = torch.tensor([0.2, -1.0, 3.0])
    expected = -(th.encode(x) * torch.log_softmax(logits, -1)).sum(-1)
    assert torch.allclose(th.loss(logits, x), expected)
    # the loss is minimised by the target itself (Gibbs' inequality)
    best = th.loss(th.encode(x).clamp_min(1e-12).log(), x)
    assert (best <= th.loss(logits, x)).all()


def test_zero_logits_decode_to_zero():
    th = TwoHot()
    assert th.decode(torch.zeros(4, 255)).abs().max() < 1e-4
