"""The key shift (`model.key_shift`, `model.shift_taps`): each key also carries the keys before it.

Each position's key gets its predecessor's key added, weighted per channel:

    k'ₜ = kₜ + s ⊙ kₜ₋₁         s: one learned weight per key channel, starting at 0

so a query can look for "the position whose *previous* token was X" in a single layer.
That is how an induction head copies ("after X came Y before, so Y again"), a pattern that
otherwise needs two layers working together; it is a token shift as in RWKV, and one tap
of Primer's depthwise convolution. It starts as a no-op and costs one multiply-add per key.

With `model.shift_taps = n` a key carries the n keys before it and a query the n - 1 queries
before it (k'ₜ = kₜ + s₁ ⊙ kₜ₋₁ + s₂ ⊙ kₜ₋₂ and q'ₜ = qₜ + r₁ ⊙ qₜ₋₁ for n = 2), so a head can
match the last n tokens it read instead of only the last one: after "SIR", a passage with
SIR ANDREW and SIR TOBY has two places to copy from; after "<|user|> SIR", one.
`MultiHeadAttention` holds the weights and calls `shift_qk` on its raw q and k, before the
norm and RoPE; the KV cache keeps the newest raw keys and queries for the next token.
"""

from __future__ import annotations

import torch

SHIFT_WEIGHTS = ("attn.k_shift", "attn.k_shift_far", "attn.q_shift")  # how the shift's weights' names end


def shift_in(z: torch.Tensor, past: torch.Tensor | None, weights: torch.Tensor):
    """z (B, T, W) plus weights[i] ⊙ (z i + 1 positions back) for each row i of weights (n, W).
    `past` (B, n, W) holds the n positions before z; None: z starts the sequence (zeros before it).
    Returns (the shifted z, the newest n positions, unshifted: the next call's `past`)."""
    n, T = weights.size(0), z.size(1)
    full = torch.cat((z.new_zeros(z.size(0), n, z.size(2)) if past is None else past, z), dim=1)
    return z + sum(w * full[:, n - 1 - i : n - 1 - i + T] for i, w in enumerate(weights)), full[:, -n:]


def shift_weights(attn) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A `MultiHeadAttention`'s query and key shift weights as (taps, width) (None: no query shift);
    row i weighs the query or key i + 1 positions back."""
    if attn.k_shift_far is None:
        return None, attn.k_shift[None]
    return attn.q_shift.view(-1, attn.sizes[0]), torch.cat((attn.k_shift, attn.k_shift_far)).view(-1, attn.sizes[1])


def shift_qk(q, k, cache, q_weights: torch.Tensor | None, k_weights: torch.Tensor):
    """The key shift (and query shift, with q_weights) of new positions q, k: (B, T, width). A KVCache
    holding earlier positions supplies their keys and queries and keeps the newest for the next call."""
    old = cache is not None and cache.pos > 0
    k, past_k = shift_in(k, cache.past_k if old else None, k_weights)
    past_q = None
    if q_weights is not None:
        q, past_q = shift_in(q, cache.past_q if old else None, q_weights)
    if cache is not None:
        cache.past_k, cache.past_q = past_k, past_q
    return q, k
