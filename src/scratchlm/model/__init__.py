"""The model: attention written out, the transformer block and its options, the GPT, the one-token decoder."""

from .attention import KVCache, MultiHeadAttention, causal_mask, scaled_dot_product_attention
from .block import MLP, TransformerBlock
from .decode import Decoder
from .gpt import GPT, GPTConfig
from .norm import Norm
from .shift import SHIFT_WEIGHTS

__all__ = ["SHIFT_WEIGHTS", "GPT", "Decoder", "GPTConfig", "KVCache", "MLP", "MultiHeadAttention", "Norm",
           "TransformerBlock", "causal_mask", "scaled_dot_product_attention"]
