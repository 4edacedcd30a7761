"""Tokenizers: turn text into integer ids and back.

Every tokenizer has `vocab_size`, `encode(str) -> list[int]`, `decode(ids) -> str`,
`save(path)` and a `to_dict()` whose JSON names its `type`, so `load_tokenizer`
can rebuild any of them from the file a run folder holds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import ScratchLMError
from .char import CharTokenizer

FORMAT = "scratchlm-tokenizer"


def tokenizer_hash(tok) -> str:
    """A short, stable fingerprint of a tokenizer (used to key caches and checkpoints)."""
    blob = json.dumps(tok.to_dict(include_meta=False), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _registry():
    types = {"char": CharTokenizer}
    try:  # the byte-level BPE lives in its own module
        from .bpe import BPETokenizer

        types["bpe"] = BPETokenizer
    except ImportError:  # pragma: no cover - only while bpe.py is being written
        pass
    from .wordbpe import WordBPETokenizer

    types["wordbpe"] = WordBPETokenizer
    return types


def tokenizer_from_dict(d: dict):
    if not isinstance(d, dict):  # e.g. a file holding `[1, 2]`: valid JSON, but no tokenizer
        raise ScratchLMError(f"tokenizer file is corrupt: its top level must be an object, not {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise ScratchLMError("not a scratchlm tokenizer file (missing 'format': 'scratchlm-tokenizer')")
    types = _registry()
    kind = d.get("type")
    if kind not in types:
        raise ScratchLMError(f"unknown tokenizer type {kind!r}; known: {', '.join(sorted(types))}")
    return types[kind].from_dict(d)


def load_tokenizer(path: str | Path):
    """Load any scratchlm tokenizer JSON file, with a clear error when it is corrupt."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScratchLMError(f"tokenizer file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScratchLMError(f"tokenizer file {path} is corrupt ({e}); retrain it or restore a copy") from None
    return tokenizer_from_dict(d)


def save_tokenizer(tok, path: str | Path) -> None:
    Path(path).write_text(json.dumps(tok.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")


__all__ = ["CharTokenizer", "load_tokenizer", "save_tokenizer", "tokenizer_hash", "tokenizer_from_dict", "FORMAT"]
