"""Fast one-token decoding: the model's forward pass for a single new token, on plain tensors.

After the prompt, generation runs the model on one token at a time. At batch 1 each
step multiplies a 1×C vector by every weight matrix once: little arithmetic, so the
time goes elsewhere —
  * reading the weights from memory (a 10M-parameter model reads 42 MB of fp32 per token);
  * PyTorch's per-call bookkeeping: a few microseconds for every module call, view,
    transpose and tiny kernel, and `GPT.forward` makes ~25 of them per layer.
`GPT.forward` is written for clarity and training (modules, dropout, any length T).
The one-token path is built by the model itself: `GPT.make_step`, `TransformerBlock.make_step`,
`MultiHeadAttention.make_step`, ... beside each `forward`, return the same sums for T = 1
as plain functions with the weights bound (gathered once), about a dozen calls per layer:
  * attention is two small batched matmuls (as fast as the fused kernel for a single
    query on a CPU), reading keys and values from the same `KVCache` that
    `GPT.forward` fills from the prompt;
  * optionally 16-bit weights (`dtype=torch.bfloat16` or `float16`): half the bytes
    per token, and a 10M model then fits in a CPU's last-level cache. Scores, softmax
    and the KV cache keep the model's dtype (fp32 for a model loaded from a run).
tests/test_decode.py checks that it gives the model's own logits, for every block option.
"""

from __future__ import annotations

import torch

from .attention import KVCache
from .gpt import GPT


class Decoder:
    """`step(ids, caches)` = `model(ids, kv_caches=caches)[0][:, -1]` for one new token per row."""

    def __init__(self, model: GPT, dtype: torch.dtype | None = None):
        self.dtype = dtype or model.lm_head.weight.dtype
        self._step = model.make_step(self.dtype)  # the weights are gathered (or converted) once, here

    def step(self, ids: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """ids: (B, 1) newest tokens. Appends their keys/values to `caches`; returns (B, V) logits.
        Call under torch.inference_mode() (generate_tokens does)."""
        return self._step(ids, caches)
