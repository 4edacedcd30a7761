"""The GPT: token + position embeddings, a stack of transformer blocks, a tied LM head.

    ids ─► wte + wpe ─► [ block ] × n_layer ─► ln_f ─► lm_head (= wteᵀ) ─► logits

Each block is pre-LayerNorm: x + attn(ln(x)), then x + mlp(ln(x)). The residual
stream carries information straight through; each block adds a correction.
Names follow GPT-2 (`wte`, `wpe`, `h`, `ln_f`, `c_attn`, `c_fc`, `c_proj`) so
weights map one-to-one onto Hugging Face's `GPT2LMHeadModel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import KVCache, MultiHeadAttention


@dataclass
class GPTConfig:
    vocab_size: int = 50304  # set from the tokenizer by the training script
    block_size: int = 256  # context length: the most tokens the model sees at once
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2


class MLP(nn.Module):
    """Position-wise feed-forward: widen 4×, GELU, project back."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: attention lets tokens talk, the MLP lets each token think."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = MultiHeadAttention(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, kv_cache: KVCache | None = None):
        x = x + self.attn(self.ln_1(x), kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),  # token embedding
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),  # learned position embedding
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        # Weight tying: the same matrix reads tokens in and scores tokens out.
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2·n_layer), because each block
        # adds two of them to the residual stream and its variance would grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        # Set by the trainer (activation checkpointing): recompute a block's activations
        # in the backward pass instead of storing them. None, or a set of block indices.
        self.checkpoint_blocks: set[int] | None = None

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are left out by default (as in nanoGPT),
        the token embedding stays because it is also the output layer."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, kv_caches: list[KVCache] | None = None, reduction: str = "mean"):
        """idx: (B, T) token ids. Returns (logits, loss); loss is None without targets.

        With `kv_caches`, idx holds only the *new* tokens and positions continue from
        what the caches already hold.
        """
        B, T = idx.shape
        start = kv_caches[0].pos if kv_caches else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than the context ({self.config.block_size})")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            if self.checkpoint_blocks is not None and i in self.checkpoint_blocks and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, kv_caches[i] if kv_caches else None)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        return logits, loss

    def new_kv_caches(self, batch: int, device=None, dtype=None) -> list[KVCache]:
        cfg = self.config
        p = self.lm_head.weight
        return [
            KVCache(batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head, device or p.device, dtype or p.dtype)
            for _ in range(cfg.n_layer)
        ]
