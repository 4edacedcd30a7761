"""Attention, written out, and the multi-head layer the model uses.

Attention lets every position look back at earlier positions and take a weighted
average of what it finds there:

    scores  = Q Kᵀ / √d_k          how well each query matches each key
    scores  = mask(scores)          a position may not look at the future (-inf)
    weights = softmax(scores)       each row sums to 1
    out     = weights V             a weighted average of the values

`scaled_dot_product_attention` below is exactly that, and can hand back the weights
so the visualisation tools can draw them. `MultiHeadAttention` runs several such
heads side by side; its fast path calls PyTorch's fused kernel
(`torch.nn.functional.scaled_dot_product_attention`, flash attention on GPUs), which
computes the same thing without materialising the T×T weight matrix. The tests
check that both paths agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def causal_mask(t_q: int, t_k: int, device=None) -> torch.Tensor:
    """Boolean (t_q, t_k) mask, True where query i may attend to key j.

    The queries are the *last* t_q of the t_k positions (as with a KV cache), so
    query i sits at absolute position t_k - t_q + i and sees keys j <= that.
    """
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p: float = 0.0, return_weights: bool = False):
    """Attention written out. q: (..., T_q, d_k), k: (..., T_k, d_k), v: (..., T_k, d_v)."""
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # softmax in fp32 for stability
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v
    return (out, weights) if return_weights else out


class KVCache:
    """Keys and values of the positions seen so far, for one layer, preallocated.

    During generation each new token only needs its own query; its keys and values
    are appended here so earlier positions are never recomputed.
    """

    def __init__(self, batch: int, n_head: int, max_len: int, head_dim: int, device, dtype):
        # one tensor holds both, so a decoder can write a token's key and value in one copy
        self.kv = torch.zeros(2, batch, n_head, max_len, head_dim, device=device, dtype=dtype)
        self.k, self.v = self.kv[0], self.kv[1]
        self.pos = 0

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
    """Causal multi-head self-attention with GPT-2 names (`c_attn`, `c_proj`)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, fast: bool = True):
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # q, k, v for all heads in one matmul
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)  # mixes the heads back together
        self.resid_dropout = nn.Dropout(dropout)
        self.dropout = dropout
        self.fast = fast  # False: use the written-out attention (slower, same result)
        self.capture_weights = False  # set by visualisation tools; weights land in .last_weights
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim): each head attends independently
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
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
