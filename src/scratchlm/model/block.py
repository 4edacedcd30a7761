"""One transformer block: attention lets tokens talk, the MLP lets each token think.

Two arrangements of the same parts (`model.norm_position`):

    pre  (GPT-2 and later, the default)     x = x + attn(norm₁(x));   x = x + mlp(norm₂(x))
    post (the original Transformer, the guide)  x = norm₁(x + attn(x));   x = norm₂(x + mlp(x))

Pre-norm leaves the residual stream untouched from input to output, so gradients
reach the first layers at full strength and training is stable at higher learning
rates; post-norm normalises the stream itself after every sub-layer.

`forward` is the block for training and prompts (any length, dropout, a KV cache).
`make_step` gives the same block for one new token per row as a plain function with
the weights bound, which the fast decoder (model/decode.py) runs: a block option
changes both, here.
The other options live in the parts: the norm (norm.py), the attention with GQA,
qk-norm and RoPE (attention.py), and the MLP below.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import KVCache, MultiHeadAttention
from .norm import Norm


def relu2(h):  # squared ReLU (Primer; modded-nanoGPT)
    return F.relu(h).square()


def swiglu(h):  # c_fc made the gate and the up projection side by side: silu(gate) · up
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


ACTIVATIONS = {
    "gelu": partial(F.gelu, approximate="tanh"),  # GPT-2's GELU: a smooth ReLU, x·Φ(x), tanh approximation
    "relu": F.relu,  # the original Transformer's (and the guide's)
    "relu2": relu2,
    "swiglu": swiglu,
}


class MLP(nn.Module):
    """Position-wise feed-forward: widen to ff_width (4·n_embd by default), activation, project back.

    For `mlp = "swiglu"`, `c_fc` holds two projections stacked by rows: rows [0, F) are the gate
    (Llama's gate_proj) and rows [F, 2F) the up projection (up_proj); `c_proj` is down_proj.
    Three matrices instead of two, so its default width is about 8/3·n_embd, not 4·n_embd
    (`GPTConfig.ff_width`): about the same parameters as the GELU MLP.
    """

    def __init__(self, cfg):  # cfg: a GPTConfig
        super().__init__()
        width = cfg.ff_width()
        self.c_fc = nn.Linear(cfg.n_embd, 2 * width if cfg.mlp == "swiglu" else width, bias=cfg.bias)
        self.c_proj = nn.Linear(width, cfg.n_embd, bias=cfg.bias)
        self.act = ACTIVATIONS[cfg.mlp]
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))

    def make_step(self, dtype: torch.dtype):
        """`forward` as a plain function of x, without dropout, on copies of the weights in `dtype`."""
        w_fc, w_proj, act = self.c_fc.weight.detach().to(dtype), self.c_proj.weight.detach().to(dtype), self.act
        b_fc = None if self.c_fc.bias is None else self.c_fc.bias.detach().to(dtype)
        b_proj = None if self.c_proj.bias is None else self.c_proj.bias.detach().to(dtype)
        return lambda x: F.linear(act(F.linear(x, w_fc, b_fc)), w_proj, b_proj)


class TransformerBlock(nn.Module):
    """A transformer block, pre-norm (default) or post-norm; parts named as GPT-2's (ln_1, attn, ln_2, mlp)."""

    def __init__(self, cfg):  # cfg: a GPTConfig
        super().__init__()
        self.ln_1 = Norm(cfg.n_embd, cfg.norm, cfg.bias)
        self.attn = MultiHeadAttention(
            cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias, fast=cfg.attention == "fused", n_kv_head=cfg.n_kv_head,
            qk_norm=cfg.qk_norm, key_shift=cfg.key_shift, shift_taps=cfg.shift_taps, norm=cfg.norm,
            rope=cfg.position == "rope", rope_base=cfg.rope_base, max_len=cfg.block_size)
        self.ln_2 = Norm(cfg.n_embd, cfg.norm, cfg.bias)
        self.mlp = MLP(cfg)
        self.post_norm = cfg.norm_position == "post"

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        if self.post_norm:
            x = self.ln_1(x + self.attn(x, kv_cache))
            return self.ln_2(x + self.mlp(x))
        x = x + self.attn(self.ln_1(x), kv_cache)
        return x + self.mlp(self.ln_2(x))

    def make_step(self, dtype: torch.dtype):
        """`forward` for one new token per row, as a plain function `step(x (B, C), cache) -> (B, C)` with
        this block's weights bound (copies in `dtype`; the model's own tensors where the dtype is the same)."""
        ln_1, attn, ln_2, mlp = (part.make_step(dtype) for part in (self.ln_1, self.attn, self.ln_2, self.mlp))
        if self.post_norm:
            def step(x, cache):
                x = ln_1(x + attn(x, cache))
                return ln_2(x + mlp(x))
        else:
            def step(x, cache):
                x = x + attn(ln_1(x), cache)
                return x + mlp(ln_2(x))
        return step
