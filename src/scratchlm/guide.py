"""The guide's code, runnable as written: word-level BPE, attention with a 0/1 mask, multi-head
attention, and the classic post-LayerNorm transformer block.

The guide that scratchlm implements explains each idea with a few lines of PyTorch. They are
collected here so a learner can run them next to the library and see that they compute the
same thing (tests/test_guide.py):

* `train_bpe(text, num_merges)` learns the same merges as `scratchlm.tokenizer.WordBPETokenizer`;
* `TransformerBlock(embed_dim, num_heads, ff_dim)` with the same weights gives the same output
  as scratchlm's `TransformerBlock` in the `guide` preset's configuration (post-LayerNorm, ReLU,
  ff_dim = 4 × embed_dim, dropout 0.1); `from_scratchlm(block)` copies the weights across and
  shows how the names map.

The library's versions differ in *how* they compute, not *what*: one matmul makes q, k and v
(`c_attn`), the mask is built inside, the fused attention kernel is used when it can be, and
positions can come from a KV cache. Here every step is spelled out.

    >>> block = TransformerBlock(embed_dim=64, num_heads=4, ff_dim=256)
    >>> x = torch.randn(2, 10, 64)
    >>> block(x, mask=causal_mask(10)).shape
    torch.Size([2, 10, 64])
"""

from __future__ import annotations

import collections
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- byte-pair encoding at the level of words (Sennrich et al., 2016) ----


def get_stats(vocab: dict[str, int]) -> collections.Counter:
    """How often each pair of adjacent symbols occurs, over words spelled as 'l o w </w>'."""
    pairs: collections.Counter = collections.Counter()
    for word, freq in vocab.items():
        symbols = word.split()
        for i in range(len(symbols) - 1):
            pairs[symbols[i], symbols[i + 1]] += freq
    return pairs


def merge_vocab(pair: tuple[str, str], vocab: dict[str, int]) -> dict[str, int]:
    """Write every occurrence of the pair as one symbol: 'l o w' -> 'lo w' for ('l', 'o')."""
    bigram = re.escape(" ".join(pair))
    pattern = re.compile(r"(?<!\S)" + bigram + r"(?!\S)")  # whole symbols only, not parts of longer ones
    return {pattern.sub("".join(pair), word): freq for word, freq in vocab.items()}


def train_bpe(text: str, num_merges: int) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Learn up to `num_merges` merges. Returns (merges in order, vocab: each word's final spelling -> count).

    Each word is spelled as characters plus the end-of-word marker '</w>'; the most frequent
    adjacent pair is merged, again and again. Ties go to the alphabetically first pair, so the
    result does not depend on dictionary order (and equals WordBPETokenizer.train's).
    """
    vocab = dict(collections.Counter(" ".join(word) + " </w>" for word in text.split()))
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs = get_stats(vocab)
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # the most frequent; ties: alphabetical
        vocab = merge_vocab(best, vocab)
        merges.append(best)
    return merges, vocab


# ---- attention ----


def causal_mask(size: int) -> torch.Tensor:
    """(size, size) of 1s on and below the diagonal: position i may look at positions 0..i."""
    return torch.tril(torch.ones(size, size))


def scaled_dot_product_attention(query, key, value, mask=None):
    """softmax(Q Kᵀ / √d_k) V. mask: 1 where a query may look, 0 where not. Returns (output, weights)."""
    d_k = query.size(-1)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    weights = F.softmax(scores, dim=-1)
    return torch.matmul(weights, value), weights


class MultiHeadAttention(nn.Module):
    """num_heads attentions side by side, each on its own embed_dim / num_heads slice of q, k and v."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        assert embed_dim % num_heads == 0
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.q_linear = nn.Linear(embed_dim, embed_dim)
        self.k_linear = nn.Linear(embed_dim, embed_dim)
        self.v_linear = nn.Linear(embed_dim, embed_dim)
        self.out_linear = nn.Linear(embed_dim, embed_dim)

    def forward(self, query, key, value, mask=None):
        batch_size = query.size(0)

        def split_heads(x):  # (batch, seq, embed) -> (batch, heads, seq, head_dim)
            return x.view(batch_size, -1, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = split_heads(self.q_linear(query)), split_heads(self.k_linear(key)), split_heads(self.v_linear(value))
        out, _ = scaled_dot_product_attention(q, k, v, mask)
        out = out.transpose(1, 2).contiguous().view(batch_size, -1, self.embed_dim)  # heads side by side again
        return self.out_linear(out)


class TransformerBlock(nn.Module):
    """The classic block: attention, then a ReLU feed-forward network, each followed by add & LayerNorm."""

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, dropout: float = 0.1):
        super().__init__()
        self.attn = MultiHeadAttention(embed_dim, num_heads)
        self.ff = nn.Sequential(nn.Linear(embed_dim, ff_dim), nn.ReLU(), nn.Linear(ff_dim, embed_dim))
        self.ln1 = nn.LayerNorm(embed_dim)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        x = self.ln1(x + self.dropout(self.attn(x, x, x, mask)))
        x = self.ln2(x + self.dropout(self.ff(x)))
        return x


# ---- the same weights in scratchlm's block ----


@torch.no_grad()
def from_scratchlm(block: nn.Module) -> TransformerBlock:
    """A guide TransformerBlock holding the weights of a scratchlm TransformerBlock built with the guide's
    options (norm_position=post, norm=layernorm, mlp=relu, bias=true, learned positions). Names map as

        ln_1 -> ln1,  attn.c_attn (q | k | v rows) -> attn.q_linear, k_linear, v_linear,
        attn.c_proj -> attn.out_linear,  ln_2 -> ln2,  mlp.c_fc -> ff[0],  mlp.c_proj -> ff[2]
    """
    attn = block.attn
    if not (block.post_norm and block.ln_1.kind == "layernorm" and block.ln_1.bias is not None
            and block.mlp.act is F.relu and attn.n_kv_head == attn.n_head and attn.q_norm is None and not attn.rope):
        raise ValueError("the block is not in the guide's configuration "
                         "(post-norm LayerNorm, ReLU, biases, plain attention)")
    embed_dim = attn.c_proj.weight.size(0)
    guide = TransformerBlock(embed_dim, attn.n_head, block.mlp.c_fc.weight.size(0), attn.dropout)
    for i, lin in enumerate((guide.attn.q_linear, guide.attn.k_linear, guide.attn.v_linear)):
        lin.weight.copy_(attn.c_attn.weight[i * embed_dim : (i + 1) * embed_dim])
        lin.bias.copy_(attn.c_attn.bias[i * embed_dim : (i + 1) * embed_dim])
    pairs = [(guide.attn.out_linear, attn.c_proj), (guide.ln1, block.ln_1), (guide.ln2, block.ln_2),
             (guide.ff[0], block.mlp.c_fc), (guide.ff[2], block.mlp.c_proj)]
    for dst, src in pairs:
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    return guide
