"""Rotary position embeddings (RoPE), chosen by `model.position = "rope"`.

Learned positions add a vector to each token at the bottom of the model. RoPE instead
rotates each head's query and key by an angle proportional to the position, in every
layer. Dimension pair (i, i + D/2) of a head turns at its own speed θ_i = base^(-2i/D):

    q' = q · cos(pos·θ) + rotate_half(q) · sin(pos·θ),   rotate_half([a, b]) = [-b, a]

A rotation keeps lengths, and rotating q by m·θ and k by n·θ changes their dot
product only through m - n: attention sees *relative* positions, and no position
table has to be learned. The layout (the two halves, not interleaved pairs) and
inv_freq = 1 / base^(2i/D) are Hugging Face Llama's, so weights export as they are.
"""

from __future__ import annotations

import torch


def rope_tables(max_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position × frequency, each (max_len, head_dim), in fp32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (T, D/2)
    angles = torch.cat((angles, angles), dim=-1)  # the same angle for both halves of each pair
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, head_dim) by the angles of its positions; cos and sin (T, head_dim) broadcast."""
    return x * cos + rotate_half(x) * sin
