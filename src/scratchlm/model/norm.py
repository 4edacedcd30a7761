"""Normalisation: LayerNorm (GPT-2) or RMSNorm (Llama), chosen by `model.norm`.

A norm rescales each position's vector so the next layer sees inputs of a steady size:

    layernorm  y = (x - mean(x)) / sqrt(var(x) + eps) · weight + bias
    rmsnorm    y = x / sqrt(mean(x²) + eps) · weight                 (no centring, no bias)

RMSNorm drops the mean and the bias: one reduction instead of two, the same quality in
practice. Both use eps = 1e-5 (`NORM_EPS`; Hugging Face export writes it as
`layer_norm_epsilon` / `rms_norm_eps`). Parameter names are nn.LayerNorm's (`weight`,
`bias`), so checkpoints from before this option existed load unchanged.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

NORM_EPS = 1e-5
NORMS = ("layernorm", "rmsnorm")


class Norm(nn.Module):
    """LayerNorm or RMSNorm over the last dimension, with a learned gain (and a bias for LayerNorm with bias=True)."""

    def __init__(self, dim: int, kind: str = "layernorm", bias: bool = True):
        super().__init__()
        self.kind, self.shape = kind, (dim,)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias and kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rmsnorm":
            return F.rms_norm(x, self.shape, self.weight, NORM_EPS)
        return F.layer_norm(x, self.shape, self.weight, self.bias, NORM_EPS)

    def make_step(self, dtype: torch.dtype, scale: float = 1.0):
        """This norm as a plain function of x for the one-token decoder (model/decode.py), its gain and
        bias copied in `dtype` (times `scale`, which attention uses to fold in its 1/√D)."""
        weight = (self.weight.detach() * scale).to(dtype)
        if self.kind == "rmsnorm":
            return partial(F.rms_norm, normalized_shape=self.shape, weight=weight, eps=NORM_EPS)
        bias = None if self.bias is None else (self.bias.detach() * scale).to(dtype)
        return partial(F.layer_norm, normalized_shape=self.shape, weight=weight, bias=bias, eps=NORM_EPS)
