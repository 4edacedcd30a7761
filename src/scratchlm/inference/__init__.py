"""Inference: load a trained run, generate tokens with a KV cache, stream text.

run = load_run("runs/shakespeare")            # .model .tokenizer .config .run_dir
for text in generate(run, "ROMEO:", max_new_tokens=100):
    print(text, end="")
"""

from __future__ import annotations

from .generate import filter_logits, generate_tokens, pick
from .load import Run, load_run, resolve_checkpoint
from .sample import encode_prompt, generate, sample_text

__all__ = [
    "Run",
    "load_run",
    "resolve_checkpoint",
    "filter_logits",
    "generate_tokens",
    "pick",
    "encode_prompt",
    "generate",
    "sample_text",
]
