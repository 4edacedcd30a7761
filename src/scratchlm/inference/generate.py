"""Sampling text from a trained model, one token at a time, with a KV cache.

Each step turns the last position's logits into a probability distribution and
draws the next token:
    temperature  divides the logits: < 1 sharpens (safer), > 1 flattens (wilder), 0 = greedy
    top-k        keeps only the k most likely tokens
    top-p        keeps the smallest set of tokens whose probabilities add up to p
The KV cache stores every layer's keys and values, so each new token costs one
position's work instead of the whole context's. Learned absolute positions tie a
cached key to its position: once the text outgrows the context the window slides
every step and the cache is rebuilt, so cached and uncached generation always agree.

The prompt (and every rebuild) goes through `GPT.forward`; each later token goes
through `Decoder.step` (model/decode.py), the same block as plain functions for one
token, several times faster at batch 1. `fast=False` uses `GPT.forward` for those too.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..model.decode import Decoder
from ..model import GPT


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Apply temperature, top-k and top-p to (B, V) logits; filtered tokens get -inf."""
    logits = logits / max(temperature, 1e-8)
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # tokens after the nucleus is full
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def pick(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(filter_logits(logits.float(), temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.inference_mode()
def generate_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    fast: bool = True,
    dtype: torch.dtype | None = None,
) -> Iterator[torch.Tensor]:
    """Yield (B, 1) new token ids one at a time. idx: (B, T) prompt ids (T ≥ 1).

    dtype: the decoder's weights (e.g. torch.bfloat16: half the memory traffic); None = the model's.
    """
    model.eval()
    T_max = model.config.block_size
    capturing = any(getattr(m, "capture_weights", False) for m in model.modules())
    decoder = Decoder(model, dtype) if use_cache and fast and not capturing else None
    caches = None
    for _ in range(max_new_tokens):
        window = idx[:, -T_max:]  # the model sees at most its context
        if not use_cache:
            logits, _ = model(window)
        elif caches is None or caches[0].pos >= T_max:
            # fill the cache from the window: at the start, and at every step once the
            # text is longer than the context (positions shift, so cached keys go stale)
            caches = model.new_kv_caches(idx.size(0))
            logits, _ = model(window, kv_caches=caches)
        elif decoder is not None:
            logits = decoder.step(idx[:, -1:], caches).unsqueeze(1)  # only the newest token is new work
        else:
            logits, _ = model(idx[:, -1:], kv_caches=caches)
        nxt = pick(logits[:, -1, :], temperature, top_k, top_p, generator)
        idx = torch.cat([idx, nxt], dim=1)
        yield nxt
