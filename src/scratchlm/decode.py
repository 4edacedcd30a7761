"""Fast one-token decoding: the model's forward pass for a single new token, written flat.

After the prompt, generation runs the model on one token at a time. At batch 1 each
step multiplies a 1×C vector by every weight matrix once: little arithmetic, so the
time goes elsewhere —
  * reading the weights from memory (a 10M-parameter model reads 42 MB of fp32 per token);
  * PyTorch's per-call bookkeeping: a few microseconds for every module call, view,
    transpose and tiny kernel, and `GPT.forward` makes ~25 of them per layer.
`GPT.forward` is written for clarity and training (modules, dropout, any length T).
`Decoder.step` does the same sums for T = 1 with plain functional calls on weights
gathered once, about a dozen per layer:
  * attention is two small batched matmuls (as fast as the fused kernel for a single
    query on a CPU), reading keys and values from the same `KVCache` that
    `GPT.forward` fills from the prompt;
  * optionally 16-bit weights (`dtype=torch.bfloat16` or `float16`): half the bytes
    per token, and a 10M model then fits in a CPU's last-level cache. Scores, softmax
    and the KV cache keep the model's dtype (fp32 for a model loaded from a run).
tests/test_decode.py checks that it gives the model's own logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import GPT
from .model.attention import KVCache


class Decoder:
    """`step(ids, caches)` = `model(ids, kv_caches=caches)[0][:, -1]` for one new token per row."""

    def __init__(self, model: GPT, dtype: torch.dtype | None = None):
        cfg = model.config
        self.n_head, self.head_dim, self.n_embd = cfg.n_head, cfg.n_embd // cfg.n_head, cfg.n_embd
        self.dtype = dtype or model.lm_head.weight.dtype

        def w(p, scale_q: bool = False):  # the model's own tensor unless the dtype changes or q is scaled
            if p is None:
                return None
            p = p.detach().to(self.dtype)
            if scale_q:  # fold attention's 1/sqrt(d_k) into the query rows of c_attn, once
                p = p.clone()
                p[: self.n_embd] *= 1.0 / math.sqrt(self.head_dim)
            return p

        tr = model.transformer
        self.wte, self.wpe = w(tr.wte.weight), w(tr.wpe.weight)
        self.ln_f = (w(tr.ln_f.weight), w(tr.ln_f.bias))
        self.layers = [
            (w(b.ln_1.weight), w(b.ln_1.bias), w(b.attn.c_attn.weight, True), w(b.attn.c_attn.bias, True),
             w(b.attn.c_proj.weight), w(b.attn.c_proj.bias), w(b.ln_2.weight), w(b.ln_2.bias),
             w(b.mlp.c_fc.weight), w(b.mlp.c_fc.bias), w(b.mlp.c_proj.weight), w(b.mlp.c_proj.bias))
            for b in tr.h
        ]

    def step(self, ids: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """ids: (B, 1) newest tokens. Appends their keys/values to `caches`; returns (B, V) logits.
        Call under torch.inference_mode() (generate_tokens does)."""
        B, C, H, D = ids.size(0), self.n_embd, self.n_head, self.head_dim
        pos = caches[0].pos
        if pos >= self.wpe.size(0):  # no position embedding left (the caches would refuse too)
            raise ValueError("KV cache is full: the sequence is longer than the model's context")
        x = F.embedding(ids.view(B), self.wte) + self.wpe[pos]  # (B, C)
        for cache, (l1w, l1b, aw, ab, pw, pb, l2w, l2b, fw, fb, mw, mb) in zip(caches, self.layers):
            qkv = F.linear(F.layer_norm(x, (C,), l1w, l1b), aw, ab)
            # (B, 3C) -> (3, B, H, 1, D): q, k, v, one row per head, in the cache's dtype
            qkv = qkv.to(cache.kv.dtype).view(B, 3, H, 1, D).transpose(0, 1)
            K, V = cache.append_kv(qkv[1:])  # this token's key and value join the cache
            K, V = K.view(B * H, -1, D), V.view(B * H, -1, D)  # (B·H, t, D)
            q = qkv[0].reshape(B * H, 1, D)
            att = torch.softmax(torch.bmm(q, K.mT), dim=-1)  # (B·H, 1, t); q is pre-scaled
            y = torch.bmm(att, V).view(B, C).type_as(x)  # heads side by side again
            x = x + F.linear(y, pw, pb)
            h = F.gelu(F.linear(F.layer_norm(x, (C,), l2w, l2b), fw, fb), approximate="tanh")
            x = x + F.linear(h, mw, mb)
        return F.linear(F.layer_norm(x, (C,), *self.ln_f), self.wte)
