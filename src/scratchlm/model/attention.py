"""Attention, written out, and the multi-head layer the model uses.

Attention lets every position look back at earlier positions and take a weighted
average of what it finds there:

    scores  = Q Kᵀ / √d_k          how well each query matches each key
    scores  = mask(scores)          a position may not look at the future (-inf)
    weights = softmax(scores)       each row sums to 1
    out     = weights V             a weighted average of the values

`scaled_dot_product_attention` below is exactly that, and can hand back the weights
so the visualisation tools can draw them. `MultiHeadAttention` runs several such
heads side by side. With `model.attention = "fused"` (the default) it calls PyTorch's
fused kernel (`torch.nn.functional.scaled_dot_product_attention`, flash attention on
GPUs), which computes the same thing without materialising the T×T weight matrix;
`"written"` uses the five lines here. The tests check that both agree.

Options (see docs/architecture-choices.md): fewer key/value heads than query heads
(grouped-query attention, `model.n_kv_head`), a norm on each head's q and k
(`model.qk_norm`), rotary positions (`model.position = "rope"`), and a key shift
(`model.key_shift`, `model.shift_taps`; shift.py): each key also carries the keys before it,
so one layer can copy the way an induction head does.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .norm import Norm
from .rope import apply_rope, rope_tables
from .shift import shift_qk, shift_weights


def causal_mask(t_q: int, t_k: int, device=None) -> torch.Tensor:
    """Boolean (t_q, t_k) mask, True where query i may attend to key j.

    The queries are the *last* t_q of the t_k positions (as with a KV cache), so
    query i sits at absolute position t_k - t_q + i and sees keys j <= that.
    """
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p: float = 0.0, return_weights: bool = False):
    """Attention written out. q: (..., T_q, d_k), k: (..., T_k, d_k), v: (..., T_k, d_v).

    mask: True (or 1) where a query may look, False (or 0) where it may not; a bool
    mask or the 0/1 float/int mask of the guide's code (`mask == 0` is hidden).
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))  # for a bool mask, mask == 0 is ~mask
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # softmax in fp32 for stability
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v
    return (out, weights) if return_weights else out


class KVCache:
    """Keys and values of the positions seen so far, for one layer, preallocated.

    During generation each new token only needs its own query; its keys and values
    are appended here so earlier positions are never recomputed. `pos` is how many
    positions it holds, so it is also the position of the next token.
    """

    def __init__(self, batch: int, n_head: int, max_len: int, head_dim: int, device, dtype):
        # one tensor holds both, so a decoder can write a token's key and value in one copy
        self.kv = torch.zeros(2, batch, n_head, max_len, head_dim, device=device, dtype=dtype)
        self.k, self.v = self.kv[0], self.kv[1]
        self.pos = 0
        self.past_k = self.past_q = None  # key shift: the newest positions' keys and queries before the shift

    def append(self, k: torch.Tensor, v: torch.Tensor):
        """Add (B, n_head, t, head_dim) keys and values; return all keys and values so far."""
        return self.append_kv(torch.stack((k, v)))

    def append_kv(self, kv: torch.Tensor):
        """The same with keys and values stacked as (2, B, n_head, t, head_dim): one copy."""
        t = kv.size(3)
        if self.pos + t > self.kv.size(3):
            raise ValueError("KV cache is full: the sequence is longer than the model's context")
        self.kv.narrow(3, self.pos, t).copy_(kv)
        self.pos += t
        return self.k.narrow(2, 0, self.pos), self.v.narrow(2, 0, self.pos)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention with GPT-2 names (`c_attn`, `c_proj`).

    `c_attn` makes q, k and v for all heads in one matmul; its output rows are
    [q: n_head·D | k: n_kv_head·D | v: n_kv_head·D] (D = head_dim), so with n_kv_head =
    n_head it is GPT-2's c_attn, and Llama's q_proj, k_proj, v_proj are its three slices.
    `c_proj` (Llama's o_proj) mixes the heads back together. With qk_norm, `q_norm` and
    `k_norm` normalise each head's q and k over D (one gain shared by all heads, as Qwen3
    and OLMo 2), before RoPE. Query head h uses key/value head h // (n_head / n_kv_head).
    With key_shift, `k_shift` (one weight per key channel) adds each position's predecessor's
    key to its own, before the norm and RoPE; the first position has no predecessor (zeros).
    With shift_taps = n > 1, `k_shift_far` (n - 1 rows of weights, stored flat) adds the keys 2..n
    back and `q_shift` (likewise) the queries 1..n - 1 back.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, fast: bool = True, *,
                 n_kv_head: int = 0, qk_norm: bool = False, key_shift: bool = False, shift_taps: int = 1,
                 norm: str = "layernorm", rope: bool = False, rope_base: float = 10000.0, max_len: int = 0):
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.n_kv_head = n_kv_head or n_head
        assert n_head % self.n_kv_head == 0, "n_head must be a multiple of n_kv_head"
        self.sizes = (n_embd, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim)  # q, k, v widths
        self.c_attn = nn.Linear(n_embd, sum(self.sizes), bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.q_norm = Norm(self.head_dim, norm, bias) if qk_norm else None
        self.k_norm = Norm(self.head_dim, norm, bias) if qk_norm else None
        self.k_shift = nn.Parameter(torch.zeros(self.sizes[1])) if key_shift else None  # 0: starts as a no-op
        far = key_shift and shift_taps > 1  # flat vectors, so optimizers treat them as gains (no Muon, no decay)
        self.k_shift_far = nn.Parameter(torch.zeros((shift_taps - 1) * self.sizes[1])) if far else None
        self.q_shift = nn.Parameter(torch.zeros((shift_taps - 1) * self.sizes[0])) if far else None
        self.rope = rope
        if rope:  # cos/sin tables for every position; not saved in checkpoints (persistent=False)
            cos, sin = rope_tables(max_len, self.head_dim, rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.resid_dropout = nn.Dropout(dropout)
        self.dropout = dropout
        self.fast = fast  # False: use the written-out attention (slower, same result)
        self.capture_weights = False  # set by visualisation tools; weights land in .last_weights
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        H, H_kv, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.c_attn(x).split(self.sizes, dim=2)
        if self.k_shift is not None:  # key shift: add the previous positions' keys (cached, or none at the start)
            q, k = shift_qk(q, k, kv_cache, *shift_weights(self))
        # (B, T, heads·D) -> (B, heads, T, D): each head attends independently
        q = q.view(B, T, H, D).transpose(1, 2)
        k, v = k.view(B, T, H_kv, D).transpose(1, 2), v.view(B, T, H_kv, D).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:  # the new tokens' positions continue from what the cache holds
            start = kv_cache.pos if kv_cache is not None else 0
            cos, sin = self.rope_cos[start : start + T].to(q.dtype), self.rope_sin[start : start + T].to(q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        if H_kv != H:  # grouped-query attention: each key/value head serves H / H_kv query heads
            k, v = k.repeat_interleave(H // H_kv, dim=1), v.repeat_interleave(H // H_kv, dim=1)
        t_k = k.size(2)
        dropout_p = self.dropout if self.training else 0.0
        if self.fast and not self.capture_weights:
            if T == t_k:  # the usual training case: a plain causal mask the kernel builds itself
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            elif T == 1:  # one new token with a cache: it may see every cached position
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            else:
                mask = causal_mask(T, t_k, x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        else:
            mask = causal_mask(T, t_k, x.device)
            y, w = scaled_dot_product_attention(q, k, v, mask, dropout_p, return_weights=True)
            if self.capture_weights:
                self.last_weights = w.detach()
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    # ---- the one-token path (model/decode.py): the same sums for T = 1, on plain tensors ----

    def make_step(self, dtype: torch.dtype):
        """`forward` for one new token per row as a plain function `step(x (B, C), cache) -> (B, C)`, with
        copies of the weights in `dtype` bound to it. Attention's 1/√D is folded, once, into the last op that
        makes q: c_attn's q rows, or q_norm's gain (RoPE, a rotation, commutes with scaling); with a query
        shift and no q_norm, into the shifted q (the cache holds the raw queries the shift adds)."""
        H, H_kv, D = self.n_head, self.n_kv_head, self.head_dim
        C, sizes = H * D, self.sizes
        scale = 1.0 / math.sqrt(D)
        w_qkv = self.c_attn.weight.detach().to(dtype)
        b_qkv = None if self.c_attn.bias is None else self.c_attn.bias.detach().to(dtype)
        w_out = self.c_proj.weight.detach().to(dtype)
        b_out = None if self.c_proj.bias is None else self.c_proj.bias.detach().to(dtype)
        q_shift, shift = (None, None) if self.k_shift is None else shift_weights(self)
        q_shift, shift = (None if w is None else w.detach().to(dtype) for w in (q_shift, shift))
        q_norm = k_norm = None
        late_scale = self.q_norm is None and q_shift is not None
        if self.q_norm is not None:
            q_norm, k_norm = self.q_norm.make_step(dtype, scale), self.k_norm.make_step(dtype)
        elif not late_scale:
            w_qkv = w_qkv.clone()
            w_qkv[:C] *= scale
            if b_qkv is not None:
                b_qkv = b_qkv.clone()
                b_qkv[:C] *= scale
        cos, sin = (self.rope_cos.to(dtype), self.rope_sin.to(dtype)) if self.rope else (None, None)
        plain = q_norm is None and cos is None and shift is None

        def step(x: torch.Tensor, cache: KVCache) -> torch.Tensor:
            B = x.size(0)
            qkv = F.linear(x, w_qkv, b_qkv)
            if plain:  # no qk-norm, no RoPE: q, k and v are views of qkv, no copies
                qkv = qkv.to(cache.kv.dtype)  # in the cache's dtype
                q, kv = qkv[:, :C], qkv[:, C:].view(B, 2, H_kv, 1, D).transpose(0, 1)  # kv: (2, B, H_kv, 1, D)
            else:
                q, k, v = qkv.split(sizes, dim=1)
                if shift is not None:  # key shift: this token's key also carries the previous ones'
                    q, k = (z[:, 0] for z in shift_qk(q[:, None], k[:, None], cache, q_shift, shift))
                    q = q * scale if late_scale else q
                q, k = q.view(B, H, D), k.view(B, H_kv, D)
                if q_norm is not None:
                    q, k = q_norm(q), k_norm(k)
                if cos is not None:  # this token's position is the number of positions cached
                    q, k = apply_rope(q, cos[cache.pos], sin[cache.pos]), apply_rope(k, cos[cache.pos], sin[cache.pos])
                q = q.to(cache.kv.dtype)
                kv = torch.stack((k, v.view(B, H_kv, D))).to(cache.kv.dtype).unsqueeze(3)
            K, V = cache.append_kv(kv)  # this token's key and value join the cache
            K, V = K.view(B * H_kv, -1, D), V.view(B * H_kv, -1, D)  # (B·H_kv, t, D)
            q = q.reshape(B * H_kv, H // H_kv, D)  # the query heads that share each key/value head
            att = torch.softmax(torch.bmm(q, K.mT), dim=-1)  # (B·H_kv, H/H_kv, t); q is pre-scaled
            y = torch.bmm(att, V).view(B, C).type_as(x)  # heads side by side again
            return F.linear(y, w_out, b_out)

        return step
