import torch

from lol_dreamer.models.layers import (
    Attention,
    Block,
    RMSNorm,
    additive_mask,
    apply_rope,
    attend,
    rope_angles,
    rope_tables,
)


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


def test_rope_full_width_tables_equal_half_width_form():
    x = torch.randn(2, 3, 5, 16)
    cos, sin = rope_angles(torch.arange(5) * 7, 16)
    cos4, sin4 = cos[None, None], sin[None, None]
    x1, x2 = x.chunk(2, dim=-1)
    ref = torch.cat((x1 * cos4 - x2 * sin4, x1 * sin4 + x2 * cos4), dim=-1)
    full = rope_tables(cos, sin)
    torch.testing.assert_close(apply_rope(x, cos4, sin4), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        apply_rope(x, full[0][None, None], full[1][None, None]), ref, rtol=0, atol=1e-6
    )
    # bf16 inputs are rotated in fp32 and returned in bf16
    xb = x.bfloat16()
    assert apply_rope(xb, cos4, sin4).dtype == torch.bfloat16


def test_additive_mask_gives_the_bool_mask_result_exactly():
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    mask = torch.rand(2, 1, 5, 7) > 0.4
    mask[..., 0] = True  # every query sees at least one key
    assert torch.equal(attend(q, k, v, mask, 50.0), attend(q, k, v, additive_mask(mask), 50.0))


def test_grouped_attention_equals_repeated_key_heads():
    q, k, v = torch.randn(3, 6, 4, 8), torch.randn(3, 2, 9, 8), torch.randn(3, 2, 9, 8)
    mask = torch.rand(3, 1, 4, 9) > 0.3
    mask[..., 0] = True
    full = attend(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), mask, 30.0)
    torch.testing.assert_close(attend(q, k, v, mask, 30.0), full, rtol=0, atol=1e-6)


def test_rmsnorm_matches_its_formula_in_fp32_and_bf16():
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 5, 16) * 3
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    torch.testing.assert_close(norm(x), ref, rtol=1e-6, atol=1e-6)
    xb = x.bfloat16()
    out = norm(xb)
    assert out.dtype == torch.bfloat16
    refb = xb.float() * torch.rsqrt(xb.float().pow(2).mean(-1, keepdim=True) + norm.eps)
    torch.testing.assert_close(out, (refb * norm.weight).bfloat16(), rtol=0, atol=0)


def test_block_input_cast_once_under_autocast_changes_nothing():
    from lol_dreamer.models.layers import _to_autocast

    h = torch.randn(2, 5, 32)
    w = torch.randn(48, 32)
    assert _to_autocast(h) is h  # no autocast: untouched
    with torch.autocast("cpu", dtype=torch.bfloat16):
        once = _to_autocast(h)
        assert once.dtype == torch.bfloat16
        # what a matmul under autocast would have computed from the fp32 input
        assert torch.equal(torch.nn.functional.linear(once, w), torch.nn.functional.linear(h, w))
