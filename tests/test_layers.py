import torch

from lol_dreamer.models.layers import Attention, Block, RMSNorm, apply_rope, attend, rope_angles


def test_rmsnorm_unit_rms():
    x = torch.randn(4, 7, 32) * 5
    y = RMSNorm(32)(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(4, 7), atol=1e-4)


def test_rope_depends_only_on_relative_position():
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(pq, pk):
        cq, sq = rope_angles(torch.tensor([pq]), 16)
        ck, sk = rope_angles(torch.tensor([pk]), 16)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    assert torch.allclose(score(3, 1), score(103, 101), atol=1e-4)
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-4)


def test_softcap_bounds_logits():
    q = torch.randn(1, 1, 2, 8) * 100
    k = torch.randn(1, 1, 3, 8) * 100
    v = torch.eye(3).view(1, 1, 3, 3)
    out = attend(q, k, v, None, softcap=1.0)
    # with |logits| <= 1 no key can take more than e^2/(e^2 + 2) of the attention mass
    bound = torch.e**2 / (torch.e**2 + 2)
    assert out.max() <= bound + 1e-5


def test_gqa_equals_repeated_heads():
    attn = Attention(32, n_heads=4, n_kv_heads=2)
    x = torch.randn(2, 5, 32)
    out, (k, _) = attn(x)
    assert k.shape == (2, 2, 5, 8)
    full = Attention(32, n_heads=4, n_kv_heads=4)
    wq = attn.q.weight
    wk, wv = attn.kv.weight.view(2, 2, 8, 32).unbind(0)
    full.q.weight.data.copy_(wq)
    full.kv.weight.data.copy_(
        torch.cat(
            [wk.repeat_interleave(2, 0).reshape(32, 32), wv.repeat_interleave(2, 0).reshape(32, 32)]
        )
    )
    full.out.weight.data.copy_(attn.out.weight)
    out_full, _ = full(x)
    assert torch.allclose(out, out_full, atol=1e-5)


def test_past_kv_equals_full_causal_pass():
    block = Block(32, n_heads=4, n_kv_heads=2)
    x = torch.randn(2, 6, 32)
    pos = torch.arange(6)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    full, _ = block(x, pos, causal)
    past = None
    outs = []
    for t in range(6):
        y, (k, v) = block(x[:, t : t + 1], pos[t : t + 1], None, past)
        past = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        outs.append(y)
    assert torch.allclose(full, torch.cat(outs, 1), atol=1e-5)
