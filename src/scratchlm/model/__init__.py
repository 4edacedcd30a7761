"""The model: attention written out, a transformer block, and the GPT."""

from .attention import KVCache, MultiHeadAttention, causal_mask, scaled_dot_product_attention
from .gpt import GPT, GPTConfig, MLP, TransformerBlock

__all__ = ["GPT", "GPTConfig", "KVCache", "MLP", "MultiHeadAttention", "TransformerBlock", "causal_mask", "scaled_dot_product_attention"]
