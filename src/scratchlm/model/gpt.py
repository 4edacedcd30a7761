"""The GPT: token (+ position) embeddings, a stack of transformer blocks, an LM head.

    ids ─► wte (+ wpe) ─► [ block ] × n_layer ─► ln_f ─► lm_head (= wteᵀ when tied) ─► logits

The residual stream carries information straight through; each block adds a
correction (model/block.py). The defaults are GPT-2's design (pre-LayerNorm, GELU,
learned positions, tied embeddings, biases), and names follow GPT-2 (`wte`, `wpe`,
`h`, `ln_f`, `c_attn`, `c_fc`, `c_proj`) so weights map one-to-one onto Hugging Face's
`GPT2LMHeadModel`. The `GPTConfig` options select other blocks: the guide's (post-norm,
ReLU) or modern ones (RMSNorm, SwiGLU, RoPE, grouped-query attention); see
docs/architecture-choices.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import KVCache
from .block import MLP, TransformerBlock
from .norm import Norm

__all__ = ["GPT", "GPTConfig", "MLP", "TransformerBlock"]


@dataclass
class GPTConfig:
    """The model's shape and block options (the `[model]` section of a run's config).

    Parameter names per option (for export and visualisation): `transformer.wte`; `transformer.wpe` only with learned
    positions; `transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}`, plus `attn.q_norm` and
    `attn.k_norm` with qk_norm, `attn.k_shift` with key_shift (and `attn.k_shift_far`, `attn.q_shift` with
    shift_taps > 1); `transformer.ln_f` only with pre-norm (a post-norm block already ends with a norm); `lm_head` (the
    same tensor as wte when tied). Norms have no `bias` for RMSNorm or bias=False. Row layouts of c_attn (q|k|v) and
    SwiGLU's c_fc (gate|up): see attention.py and block.py.
    """

    vocab_size: int = 50304  # set from the tokenizer by the training script
    block_size: int = 256  # context length: the most tokens the model sees at once
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm, as GPT-2
    # ---- block options; the defaults are GPT-2's block (docs/architecture-choices.md) ----
    norm_position: str = "pre"  # pre | post: normalise each sub-layer's input (GPT-2) or the sum after it (guide)
    norm: str = "layernorm"  # layernorm | rmsnorm
    mlp: str = "gelu"  # gelu | relu | relu2 | swiglu
    ff_dim: int = 0  # MLP hidden width; 0 = 4·n_embd, for swiglu ≈ 8/3·n_embd (see ff_width)
    position: str = "learned"  # learned | rope
    rope_base: float = 10000.0  # RoPE: the slowest pair turns once per ~2π·base positions
    n_kv_head: int = 0  # key/value heads (grouped-query attention); 0 = n_head
    qk_norm: bool = False  # normalise each head's q and k before the dot product
    key_shift: bool = False  # each key also carries the previous position's key (a token shift; attention.py)
    shift_taps: int = 1  # key_shift: each key carries this many keys before it, each query one fewer
    tie_embeddings: bool = True  # lm_head shares wte's matrix
    logit_softcap: float = 0.0  # logits = cap·tanh(logits / cap); 0 = off
    attention: str = "fused"  # fused (PyTorch's kernel) | written (the five lines in attention.py)

    def ff_width(self) -> int:
        """The MLP's hidden width. ff_dim = 0: 4·n_embd; for SwiGLU, which has three matrices instead
        of two, 8/3·n_embd rounded up to a multiple of 8, which keeps the parameter count (Llama's choice)."""
        if self.ff_dim:
            return self.ff_dim
        return -(-8 * self.n_embd // 3 // 8) * 8 if self.mlp == "swiglu" else 4 * self.n_embd

    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head


class GPT(nn.Module):
    """A decoder-only transformer language model: `model(ids, targets)` -> (logits, loss)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        parts = dict(wte=nn.Embedding(cfg.vocab_size, cfg.n_embd))  # token embedding
        if cfg.position == "learned":
            parts["wpe"] = nn.Embedding(cfg.block_size, cfg.n_embd)  # learned position embedding
        parts["drop"] = nn.Dropout(cfg.dropout)
        parts["h"] = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layer))
        if cfg.norm_position == "pre":  # pre-norm leaves the stream unnormalised: one last norm
            parts["ln_f"] = Norm(cfg.n_embd, cfg.norm, cfg.bias)
        self.transformer = nn.ModuleDict(parts)
        # Post-norm (the original Transformer) multiplies the token embeddings by √n_embd: its stream is
        # normalised after every sub-layer, and embeddings of std 0.02 would be drowned there (measured:
        # without it a post-norm model stays at the unigram loss). Pre-norm adds to a raw stream: no scale.
        self.embed_scale = math.sqrt(cfg.n_embd) if cfg.norm_position == "post" else 1.0
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:  # the same matrix reads tokens in and scores tokens out
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
        self.head_at_targets = False  # fine-tuning's loss counts its answers only: the head skips the rest

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
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def softcap(self, logits: torch.Tensor) -> torch.Tensor:
        """cap·tanh(logits / cap) (Gemma 2): logits stay within ±cap, smoothly; off when cap = 0."""
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap else logits

    def forward(self, idx, targets=None, kv_caches: list[KVCache] | None = None, reduction: str = "mean"):
        """idx: (B, T) token ids. Returns (logits, loss); loss is None without targets.

        With `kv_caches`, idx holds only the *new* tokens and positions continue from
        what the caches already hold.
        """
        B, T = idx.shape
        start = kv_caches[0].pos if kv_caches else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than the context ({self.config.block_size})")
        x = self.transformer.wte(idx) * self.embed_scale
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            if self.checkpoint_blocks is not None and i in self.checkpoint_blocks and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, kv_caches[i] if kv_caches else None)
        if "ln_f" in self.transformer:
            x = self.transformer.ln_f(x)
        if targets is not None and self.head_at_targets and self.training and reduction == "mean":  # answers only
            x, targets = x.reshape(-1, x.size(-1))[targets.reshape(-1) != -100], targets[targets != -100]
        logits = self.softcap(self.lm_head(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        return logits, loss

    def new_kv_caches(self, batch: int, device=None, dtype=None) -> list[KVCache]:
        cfg, p = self.config, self.lm_head.weight
        device, dtype = device or p.device, dtype or p.dtype
        return [KVCache(batch, cfg.kv_heads(), cfg.block_size, cfg.n_embd // cfg.n_head, device, dtype)
                for _ in range(cfg.n_layer)]

    # ---- the one-token path (model/decode.py): `forward` for T = 1 on plain tensors ----

    def make_step(self, dtype: torch.dtype):
        """`forward(ids, kv_caches=caches)[0][:, -1]` for ids (B, 1) as a plain function `step(ids, caches)`,
        built from each part's `make_step`, with copies of the weights in `dtype` bound to it."""
        tr, block_size = self.transformer, self.config.block_size
        wte, head = tr.wte.weight.detach().to(dtype), self.lm_head.weight.detach().to(dtype)
        wpe = tr.wpe.weight.detach().to(dtype) if "wpe" in tr else None
        blocks = [block.make_step(dtype) for block in tr.h]
        ln_f = tr.ln_f.make_step(dtype) if "ln_f" in tr else None
        cap, scale = self.config.logit_softcap, self.embed_scale

        def step(ids: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
            pos = caches[0].pos
            if pos >= block_size:  # no position left (the caches would refuse too)
                raise ValueError("KV cache is full: the sequence is longer than the model's context")
            x = F.embedding(ids.view(-1), wte) * scale  # (B, C)
            if wpe is not None:
                x = x + wpe[pos]
            for block, cache in zip(blocks, caches):
                x = block(x, cache)
            if ln_f is not None:
                x = ln_f(x)
            logits = F.linear(x, head)
            return cap * torch.tanh(logits / cap) if cap else logits

        return step
