"""Take attention apart on a real forward pass: the maps of every head, and one head's Q, K, V.

`attention_maps(model, ids)` runs the model once with `capture_weights` switched on
(each attention layer then uses the written-out attention and keeps its softmax
weights) and returns them as a (layers, heads, T, T) array.

`qkv_walkthrough(model, ids, layer, head)` returns every matrix of one head's
computation. The tensors are the ones the model itself used: for that one forward we
wrap `scratchlm.model.attention.scaled_dot_product_attention` (the five lines of
attention the layer calls with capture on) and keep what it is given and gives back.
So Q and K are what attention really compares: after the key (and query) shift (`key_shift`), the
per-head norm (`qk_norm`) and the rotary positions (`position = "rope"`) when the run uses
them; with grouped-query attention (`n_kv_head` < `n_head`) K and V are the shared
key/value head this query head reads. Next to them we compute X·W_q, X·W_k, X·W_v from
the layer's weights, so a figure can show both the plain projection and what the options
turned it into.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model import attention as attention_module


def attention_layers(model) -> list:
    """The model's attention modules in layer order (everything with a `capture_weights` switch)."""
    layers = [m for m in model.modules() if hasattr(m, "capture_weights")]
    if not layers:
        raise ValueError("this model has no attention layers with capture_weights")
    return layers


def token_labels(tok, ids) -> list[str]:
    """Each token as readable text: a leading space as '␣', a newline as '↵', a tab as '⇥'."""
    out = []
    for i in ids:
        text = tok.decode([int(i)])
        out.append(text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "⏎") or "∅")
    return out


@contextmanager
def capturing(model):
    """Eval mode (no dropout) and weight capture on for the duration; both restored after."""
    layers = attention_layers(model)
    was_training = model.training
    model.eval()
    for m in layers:
        m.capture_weights = True
    try:
        yield layers
    finally:
        for m in layers:
            m.capture_weights, m.last_weights = False, None
        model.train(was_training)


def _as_batch(ids, device) -> torch.Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    return ids.unsqueeze(0) if ids.dim() == 1 else ids


@torch.no_grad()
def attention_maps(model, ids) -> np.ndarray:
    """(layers, heads, T, T) float32 softmax weights for one sequence of token ids."""
    device = next(model.parameters()).device
    with capturing(model) as layers:
        model(_as_batch(ids, device))
        maps = torch.stack([m.last_weights[0].float() for m in layers])
    return maps.cpu().numpy()


@dataclass
class Walkthrough:
    """One head's attention, every matrix as a NumPy array (T tokens, C model width, D head width)."""

    layer: int
    head: int
    tokens: list[str]
    X: np.ndarray  # (T, C) the layer's input: the residual stream after the block's norm
    Wq: np.ndarray  # (C, D) this head's slice of c_attn for queries (and Wk, Wv for keys, values)
    Wk: np.ndarray
    Wv: np.ndarray
    XWq: np.ndarray  # (T, D) X·W_q + bias: the plain projections
    XWk: np.ndarray
    XWv: np.ndarray
    Q: np.ndarray  # (T, D) what attention compared: X·W_q after qk_norm / RoPE if the model uses them
    K: np.ndarray
    V: np.ndarray
    scores: np.ndarray  # (T, T) Q·Kᵀ/√D before the mask
    mask: np.ndarray  # (T, T) bool, True where query i may look at key j
    weights: np.ndarray  # (T, T) softmax of the masked scores: each row sums to 1
    out: np.ndarray  # (T, D) weights·V: what this head adds (before c_proj mixes the heads)
    Q_all: np.ndarray  # (heads, T, D) every head's Q, K, V in this layer (for the cube)
    K_all: np.ndarray
    V_all: np.ndarray
    options: list[str] = field(default_factory=list)  # e.g. ["rope", "qk_norm", "gqa 4→2"]


@torch.no_grad()
def qkv_walkthrough(model, ids, layer: int = 0, head: int = 0, tokens: list[str] | None = None) -> Walkthrough:
    """Every matrix of head `head` in layer `layer` on one sequence, from a real forward pass."""
    layers = attention_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} does not exist: the model has layers 0..{len(layers) - 1}")
    attn = layers[layer]
    if not 0 <= head < attn.n_head:
        raise ValueError(f"head {head} does not exist: layer {layer} has heads 0..{attn.n_head - 1}")
    device = next(model.parameters()).device
    seen: dict = {}

    def keep_input(module, args):  # X: what the layer receives (already normalised by the block)
        seen["x"] = args[0].detach()

    original = attention_module.scaled_dot_product_attention

    def recording(q, k, v, mask=None, *args, **kwargs):
        result = original(q, k, v, mask, *args, **kwargs)
        if seen.get("in_layer"):
            seen["qkv"] = (q.detach(), k.detach(), v.detach(), mask)
            seen["out"] = (result[0] if isinstance(result, tuple) else result).detach()
        return result

    def enter(module, args):
        keep_input(module, args)
        seen["in_layer"] = True

    def leave(module, args, output):
        seen["in_layer"] = False

    hooks = [attn.register_forward_pre_hook(enter), attn.register_forward_hook(leave)]
    attention_module.scaled_dot_product_attention = recording
    try:
        with capturing(model):
            model(_as_batch(ids, device))
            weights_all = attn.last_weights[0].float()
    finally:
        attention_module.scaled_dot_product_attention = original
        for h in hooks:
            h.remove()
    if "qkv" not in seen:
        raise RuntimeError("the attention layer did not call scaled_dot_product_attention; the walkthrough "
                           "needs the written-out attention path")
    q, k, v, mask = seen["qkv"]
    x = seen["x"][0].float()
    T, D = q.size(2), q.size(3)
    q, k, v = q[0].float(), k[0].float(), v[0].float()  # (heads, T, D)
    scores = q[head] @ k[head].T / math.sqrt(D)
    mask = attention_module.causal_mask(T, T, device) if mask is None else mask.bool()
    # this head's slices of the one big projection c_attn: rows [q | k | v], each head D rows
    W = attn.c_attn.weight.detach().float()
    b = attn.c_attn.bias.detach().float() if attn.c_attn.bias is not None else torch.zeros(W.size(0))
    C = W.size(1)
    sizes = getattr(attn, "sizes", (C, C, C))
    n_kv = getattr(attn, "n_kv_head", attn.n_head)
    kv_head = head // (attn.n_head // n_kv)
    rows_q = slice(head * D, (head + 1) * D)
    rows_k = slice(sizes[0] + kv_head * D, sizes[0] + (kv_head + 1) * D)
    rows_v = slice(sizes[0] + sizes[1] + kv_head * D, sizes[0] + sizes[1] + (kv_head + 1) * D)
    proj = {name: (x @ W[rows].T + b[rows]) for name, rows in (("q", rows_q), ("k", rows_k), ("v", rows_v))}
    options = []
    if getattr(attn, "q_norm", None) is not None:
        options.append("qk_norm")
    if getattr(attn, "k_shift", None) is not None:
        options.append("key_shift")
    if getattr(attn, "q_shift", None) is not None:
        options.append("query_shift")
    if getattr(attn, "rope", False):
        options.append("rope")
    if n_kv != attn.n_head:
        options.append(f"gqa {attn.n_head}→{n_kv}")

    def np_(t):
        return t.cpu().numpy()

    return Walkthrough(
        layer=layer, head=head, tokens=tokens or [str(int(i)) for i in torch.as_tensor(ids).view(-1)],
        X=np_(x), Wq=np_(W[rows_q].T), Wk=np_(W[rows_k].T), Wv=np_(W[rows_v].T),
        XWq=np_(proj["q"]), XWk=np_(proj["k"]), XWv=np_(proj["v"]),
        Q=np_(q[head]), K=np_(k[head]), V=np_(v[head]),
        scores=np_(scores), mask=np_(mask.reshape(T, T)), weights=np_(weights_all[head]),
        out=np_(seen["out"][0, head].float()),
        Q_all=np_(q), K_all=np_(k), V_all=np_(v), options=options,
    )
