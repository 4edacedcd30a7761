"""Sampling text from a loaded model: the prompt, the seeded generator, text streamed as it arrives."""

from __future__ import annotations

import sys

import torch

from ..config import SampleConfig, validate_sample
from ..tokenizer import StreamDecoder
from .generate import generate_tokens


_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # the decoder's weights


def encode_prompt(tok, prompt: str, block_size: int, warn=lambda m: print(m, file=sys.stderr)) -> list[int]:
    ids = tok.encode(prompt) if prompt else []
    if not ids:  # start from a new line, or <|endoftext|> where a new line has no token (word-level BPE)
        ids = tok.encode("\n") or [tok.special_tokens[s] for s in ("<|endoftext|>",) if s in tok.special_tokens]
    if len(ids) > block_size:
        warn(
            f"note: the prompt is {len(ids)} tokens, longer than the context ({block_size}); keeping its last "
            f"{block_size}"
        )
        ids = ids[-block_size:]
    return ids


def stream_text(model, tok, ids: list[int], sc: SampleConfig, gen: torch.Generator):
    """Yield the text generated after prompt ids `ids`, piece by piece, never splitting a character."""
    stream = StreamDecoder(tok)  # a token may end inside a character: hold it back until complete
    idx = torch.tensor([ids], device=gen.device)
    for nxt in generate_tokens(
        model, idx, sc.max_new_tokens, sc.temperature, sc.top_k, sc.top_p, gen, dtype=_DTYPES[sc.dtype]
    ):
        piece = stream.feed(nxt[0].tolist())
        if piece:
            yield piece
    tail = stream.flush()
    if tail:
        yield tail


def sample_text(model, tok, sc: SampleConfig, out=None, sep: str = "-" * 60) -> list[str]:
    """Generate `sc.num_samples` texts from one seeded generator (same seed, same texts);
    stream each to `out` (a file object) as it is generated, if given."""
    validate_sample(sc)
    device = next(model.parameters()).device
    ids = encode_prompt(tok, sc.prompt, model.config.block_size)
    gen = torch.Generator(device=device).manual_seed(sc.seed)
    texts = []
    for _ in range(sc.num_samples):
        if out:
            out.write(f"{sep}\n{sc.prompt}")
        pieces = [sc.prompt]
        for piece in stream_text(model, tok, ids, sc, gen):
            pieces.append(piece)
            if out:
                out.write(piece)
                out.flush()
        if out:
            out.write("\n")
        texts.append("".join(pieces))
    if out:
        out.write(sep + "\n")
    return texts


def generate(
    run,
    prompt: str = "\n",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 0.95,
    seed: int = 1337,
    dtype: str = "fp32",
):
    """Yield the text a loaded run (`load_run(...)`) writes after `prompt`, piece by piece as it is generated."""
    sc = SampleConfig(
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        num_samples=1,
        dtype=dtype,
    )
    validate_sample(sc)
    device = next(run.model.parameters()).device
    ids = encode_prompt(run.tokenizer, prompt, run.model.config.block_size)
    yield from stream_text(run.model, run.tokenizer, ids, sc, torch.Generator(device=device).manual_seed(seed))
