"""Attention metrics on hand-built maps, and the captured Q/K/V against the model's own forward pass."""

import math

import numpy as np
import pytest
import torch

from scratchlm.model import GPT, GPTConfig
from scratchlm.viz import metrics
from scratchlm.viz.capture import attention_maps, qkv_walkthrough

T = 10


def prev_token_map(t=T):
    w = np.zeros((t, t))
    w[0, 0] = 1
    for i in range(1, t):
        w[i, i - 1] = 1
    return w


def uniform_map(t=T):
    return np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]


def sink_map(t=T):
    w = np.zeros((t, t))
    w[:, 0] = 1
    return w


def induction_map(period, t):
    """Row i of the second copy looks at i - period + 1; the rest look at themselves."""
    w = np.eye(t)
    for i in range(period, t):
        w[i] = 0
        w[i, i - period + 1] = 1
    return w


def random_causal(rng, t=T):
    s = rng.normal(size=(t, t)) * 3
    s[np.triu_indices(t, 1)] = -np.inf
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_pure_previous_token_head():
    w = prev_token_map()
    assert metrics.prev_token_share(w) == pytest.approx(1.0)
    assert metrics.first_token_share(w) == pytest.approx(0.0)
    assert metrics.entropy_fraction(w) == pytest.approx(0.0)


def test_uniform_head_has_maximal_entropy():
    assert metrics.entropy_fraction(uniform_map()) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):  # no other causal map spreads more
        assert metrics.entropy_fraction(random_causal(rng)) < 1.0
    # uniform rows: the previous and the first token each get 1/(i+1)
    expected = np.mean([1 / (i + 1) for i in range(2, T)])
    assert metrics.prev_token_share(uniform_map()) == pytest.approx(expected)
    assert metrics.first_token_share(uniform_map()) == pytest.approx(expected)


def test_sink_head():
    w = sink_map()
    assert metrics.first_token_share(w) == pytest.approx(1.0)
    assert metrics.prev_token_share(w) == pytest.approx(0.0)
    assert metrics.entropy_fraction(w) == pytest.approx(0.0)


def test_induction_score():
    n = 6
    assert metrics.induction_score(induction_map(n, 2 * n), n) == pytest.approx(1.0)
    assert metrics.induction_score(prev_token_map(2 * n), n) == pytest.approx(0.0)
    uniform = np.mean([1 / (i + 1) for i in range(n, 2 * n)])
    assert metrics.induction_score(uniform_map(2 * n), n) == pytest.approx(uniform)
    with pytest.raises(ValueError):
        metrics.induction_score(uniform_map(4), 4)


def test_head_metrics_keeps_leading_axes():
    maps = np.stack([np.stack([prev_token_map(), uniform_map(), sink_map()])] * 2)  # (2 layers, 3 heads, T, T)
    ind = np.broadcast_to(induction_map(5, 10), (2, 3, 10, 10))
    m = metrics.head_metrics(maps, ind, 5)
    assert set(m) == set(metrics.METRICS)
    for v in m.values():
        assert v.shape == (2, 3) and v.dtype == np.float32
    np.testing.assert_allclose(m["prev_token"][:, 0], 1.0)
    np.testing.assert_allclose(m["entropy"][:, 1], 1.0, rtol=1e-6)
    np.testing.assert_allclose(m["first_token"][:, 2], 1.0)
    np.testing.assert_allclose(m["induction"], 1.0)


def test_repeated_random_ids():
    ids = metrics.repeated_random_ids(50, 12, seed=3, avoid={0, 1, 2})
    assert len(ids) == 24 and ids[:12] == ids[12:]
    assert len(set(ids[:12])) == 12 and not {0, 1, 2} & set(ids)
    assert ids == metrics.repeated_random_ids(50, 12, seed=3, avoid={0, 1, 2})  # seeded: the same every time


def small_model(**extra):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=4, n_embd=32, **extra)
    return GPT(cfg).eval()


def test_attention_maps_are_the_models_softmax_rows():
    model = small_model()
    ids = torch.randint(0, 40, (12,))
    maps = attention_maps(model, ids)
    assert maps.shape == (2, 4, 12, 12)
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(maps, 1) == 0)  # nothing on the future
    # capture switched off again, training mode restored
    layers = [m for m in model.modules() if hasattr(m, "capture_weights")]
    assert all(not m.capture_weights and m.last_weights is None for m in layers)


def _check_walkthrough(model, layer, head):
    ids = torch.randint(0, 40, (9,))
    w = qkv_walkthrough(model, ids, layer, head)
    T, D = w.Q.shape
    # the five lines of attention, redone from the captured matrices
    s = w.Q @ w.K.T / math.sqrt(D)
    np.testing.assert_allclose(w.scores, s, atol=1e-5)
    masked = np.where(w.mask, w.scores, -np.inf)
    soft = np.exp(masked - masked.max(-1, keepdims=True))
    np.testing.assert_allclose(w.weights, soft / soft.sum(-1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(w.out, w.weights @ w.V, atol=1e-5)
    # against the real forward: the layer's output is c_proj of all heads' outputs side by side
    attn = [m for m in model.modules() if hasattr(m, "capture_weights")][layer]
    got = {}
    hook = attn.register_forward_hook(lambda mod, a, out: got.setdefault("y", out.detach()))
    with torch.no_grad():
        model(ids[None])
    hook.remove()
    heads = np.stack([qkv_walkthrough(model, ids, layer, h).out for h in range(attn.n_head)])  # (H, T, D)
    y = attn.c_proj(torch.from_numpy(heads.transpose(1, 0, 2).reshape(T, -1)))
    torch.testing.assert_close(y, got["y"][0], atol=1e-5, rtol=1e-4)
    return w


def test_walkthrough_default_model_is_the_forward_pass():
    w = _check_walkthrough(small_model(), layer=1, head=2)
    np.testing.assert_allclose(w.Q, w.XWq, atol=1e-5)  # no options: Q is X·W_q exactly
    np.testing.assert_allclose(w.K, w.XWk, atol=1e-5)
    np.testing.assert_allclose(w.V, w.XWv, atol=1e-5)
    assert w.Q_all.shape == (4, 9, 8) and w.options == []


@pytest.mark.parametrize("extra, option", [({"position": "rope"}, "rope"), ({"qk_norm": True}, "qk_norm"),
                                           ({"n_kv_head": 2}, "gqa 4→2")])
def test_walkthrough_with_block_options(extra, option):
    if not all(hasattr(GPTConfig(), k) for k in extra):
        pytest.skip(f"the model has no {extra} option yet")
    w = _check_walkthrough(small_model(**extra), layer=0, head=3)
    assert option in w.options
    np.testing.assert_allclose(w.V, w.XWv, atol=1e-5)  # V is always the plain projection
