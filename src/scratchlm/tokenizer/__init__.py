"""Tokenizers: turn text into integer ids and back.

Every tokenizer implements the `Tokenizer` protocol (base.py): `vocab_size`,
`encode`, `encode_documents`, `decode`, `token_bytes`, `special_tokens`, `to_dict`
and `save`. Its file names its `type`, so `load_tokenizer` can rebuild any of them.

    bpe.py      byte-level BPE (GPT-2/GPT-4 style): the one to use
    wordbpe.py  the original word-level BPE with `</w>`, for comparison
    char.py     one id per character
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import ScratchLMError
from .base import FORMAT, StreamDecoder, Tokenizer, read_json
from .bpe import BPETokenizer
from .char import CharTokenizer
from .wordbpe import WordBPETokenizer

TYPES = {"bpe": BPETokenizer, "wordbpe": WordBPETokenizer, "char": CharTokenizer}


def tokenizer_hash(tok: Tokenizer) -> str:
    """A short, stable fingerprint of a tokenizer (used to key caches and checkpoints)."""
    blob = json.dumps(tok.to_dict(include_meta=False), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def tokenizer_from_dict(d: dict) -> Tokenizer:
    if not isinstance(d, dict):  # e.g. a file holding `[1, 2]`: valid JSON, but no tokenizer
        raise ScratchLMError(f"tokenizer file is corrupt: its top level must be an object, not {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise ScratchLMError(f"not a scratchlm tokenizer file (missing 'format': '{FORMAT}')")
    kind = d.get("type")
    if kind not in TYPES:
        raise ScratchLMError(f"unknown tokenizer type {kind!r}; known: {', '.join(sorted(TYPES))}")
    return TYPES[kind].from_dict(d)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load any scratchlm tokenizer JSON file, with a clear error when it is corrupt."""
    return tokenizer_from_dict(read_json(path))


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    tok.save(path)


__all__ = ["BPETokenizer", "CharTokenizer", "WordBPETokenizer", "Tokenizer", "StreamDecoder", "FORMAT", "TYPES",
           "load_tokenizer", "save_tokenizer", "tokenizer_hash", "tokenizer_from_dict"]
