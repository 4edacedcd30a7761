"""Our written-out attention against PyTorch's fused scaled_dot_product_attention."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from scratchlm.model import GPT, GPTConfig, MultiHeadAttention, causal_mask, scaled_dot_product_attention


def test_written_out_matches_sdpa_forward_and_backward():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, dtype=torch.float32, requires_grad=True) for _ in range(3))
    ours = scaled_dot_product_attention(q, k, v, causal_mask(10, 10))
    ours.sum().backward()
    g_ours = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref.sum().backward()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_ours, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_weights_are_causal_rows_that_sum_to_one():
    q, k, v = (torch.randn(1, 1, 5, 4) for _ in range(3))
    _, w = scaled_dot_product_attention(q, k, v, causal_mask(5, 5), return_weights=True)
    assert torch.allclose(w.sum(-1), torch.ones(1, 1, 5))
    assert torch.all(w[0, 0].triu(diagonal=1) == 0)  # no looking at the future
    # the first position can only see itself
    assert w[0, 0, 0, 0] == 1.0
    # unmasked scores are q·k/√d
    s = (q @ k.transpose(-2, -1)) / math.sqrt(4)
    assert torch.allclose(w[0, 0, 1, :2], torch.softmax(s[0, 0, 1, :2], -1))


def test_mask_for_queries_at_the_end():
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_multihead_fast_path_equals_written_out_path():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4)
    x = torch.randn(3, 7, 32, requires_grad=True)
    fast = attn(x)
    fast.sum().backward()
    g_fast = [p.grad.clone() for p in attn.parameters()] + [x.grad.clone()]
    attn.zero_grad()
    x.grad = None
    attn.fast = False
    slow = attn(x)
    slow.sum().backward()
    g_slow = [p.grad for p in attn.parameters()] + [x.grad]
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_capture_weights_for_visualisation():
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2)
    x = torch.randn(1, 6, 16)
    fast = attn(x)
    attn.capture_weights = True
    captured = attn(x)
    w = attn.last_weights
    assert w.shape == (1, 2, 6, 6)
    # the very weights of the written-out attention on this layer's q and k
    q, k, v = (t.view(1, 6, 2, 8).transpose(1, 2) for t in attn.c_attn(x).split(16, dim=2))
    _, ref = scaled_dot_product_attention(q, k, v, causal_mask(6, 6), return_weights=True)
    torch.testing.assert_close(w, ref)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 6))
    torch.testing.assert_close(captured, fast, atol=1e-5, rtol=1e-5)  # capturing does not change the output


def _loss_and_grads(model, x, y):
    model.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("options", [{}, {"n_kv_head": 2, "position": "rope", "qk_norm": True, "key_shift": True,
                                          "shift_taps": 2}])
def test_fused_and_written_models_give_the_same_loss_and_gradients(options):
    """model.attention = fused | written: the same numbers to 1e-5 in fp32, forward and backward."""
    cfg = GPTConfig(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32, **options)
    torch.manual_seed(0)
    fused = GPT(cfg)
    written = GPT(replace(cfg, attention="written"))
    written.load_state_dict(fused.state_dict())
    assert all(not b.attn.fast for b in written.transformer.h) and all(b.attn.fast for b in fused.transformer.h)
    x, y = torch.randint(0, 61, (3, 16)), torch.randint(0, 61, (3, 16))
    loss_f, grads_f = _loss_and_grads(fused, x, y)
    loss_w, grads_w = _loss_and_grads(written, x, y)
    torch.testing.assert_close(loss_w, loss_f, atol=1e-5, rtol=1e-5)
    for n in grads_f:
        torch.testing.assert_close(grads_w[n], grads_f[n], atol=1e-5, rtol=1e-5, msg=n)


def test_captured_weights_with_grouped_query_attention_have_one_map_per_query_head():
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, n_kv_head=2)
    x = torch.randn(1, 6, 32)
    fast = attn(x)
    attn.capture_weights = True
    torch.testing.assert_close(attn(x), fast, atol=1e-5, rtol=1e-5)
    w = attn.last_weights
    assert w.shape == (1, 4, 6, 6)
    assert not torch.allclose(w[:, 0], w[:, 1])  # heads 0 and 1 share keys and values, not queries


def test_key_shift_adds_the_previous_keys_weighted_per_channel():
    """k'_t = k_t + s * k_{t-1} (nothing before the first position), then attention as usual (SDPA)."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, key_shift=True)
    x = torch.randn(2, 7, 32)
    assert not attn.k_shift.any()  # s starts at 0 ...
    plain = MultiHeadAttention(32, 4)
    plain.load_state_dict({k: v for k, v in attn.state_dict().items() if k != "k_shift"})
    torch.testing.assert_close(attn(x), plain(x))  # ... so the shift starts as a no-op
    with torch.no_grad():
        attn.k_shift.copy_(torch.randn(32))
    q, k, v = attn.c_attn(x).split(32, dim=2)
    before = torch.cat((torch.zeros(2, 1, 32), k[:, :-1]), dim=1)
    k = k + attn.k_shift * before
    heads = [t.view(2, 7, 4, 8).transpose(1, 2) for t in (q, k, v)]
    y = F.scaled_dot_product_attention(*heads, is_causal=True).transpose(1, 2).reshape(2, 7, 32)
    torch.testing.assert_close(attn(x), attn.c_proj(y), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(attn(x), plain(x), atol=1e-3)


def test_shift_taps_add_the_keys_and_queries_further_back():
    """shift_taps = 3: k'_t = k_t + s1 k_{t-1} + s2 k_{t-2} + s3 k_{t-3}, q'_t = q_t + r1 q_{t-1} + r2 q_{t-2},
    with zeros before the first position; all weights start at 0 (a no-op on a trained model)."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4, key_shift=True, shift_taps=3)
    assert attn.k_shift_far.shape == (2 * 32,) and attn.q_shift.shape == (2 * 32,)  # 2 rows each, flat
    plain = MultiHeadAttention(32, 4)
    plain.load_state_dict({k: v for k, v in attn.state_dict().items() if "shift" not in k})
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(attn(x), plain(x))
    with torch.no_grad():
        for p in (attn.k_shift, attn.k_shift_far, attn.q_shift):
            p.copy_(torch.randn_like(p))
    q, k, v = attn.c_attn(x).split(32, dim=2)

    def back(z, i):  # z moved i positions later, zeros in front
        return torch.cat((torch.zeros(2, i, 32), z[:, :-i]), dim=1)

    s, r = attn.k_shift_far.view(2, 32), attn.q_shift.view(2, 32)
    k = k + attn.k_shift * back(k, 1) + s[0] * back(k, 2) + s[1] * back(k, 3)
    q = q + r[0] * back(q, 1) + r[1] * back(q, 2)
    heads = [t.view(2, 7, 4, 8).transpose(1, 2) for t in (q, k, v)]
    y = F.scaled_dot_product_attention(*heads, is_causal=True).transpose(1, 2).reshape(2, 7, 32)
    torch.testing.assert_close(attn(x), attn.c_proj(y), atol=1e-5, rtol=1e-5)
