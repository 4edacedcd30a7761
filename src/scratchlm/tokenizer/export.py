"""Take a scratchlm BPE tokenizer to other libraries, with the same ids.

* `to_tiktoken(tok)` builds a `tiktoken.Encoding` in memory from our ranks. tiktoken
  describes a byte-level BPE by `mergeable_ranks`: token bytes -> rank, where rank is
  the token id. Ours is exactly that: byte b has rank b, merge i has rank 256 + i.
  Nothing is downloaded (tiktoken only downloads for its *named* encodings).
* `to_huggingface_json(tok)` / `save_huggingface(tok, path)` write a `tokenizer.json`
  for the Hugging Face `tokenizers` library (and so `transformers`'
  `PreTrainedTokenizerFast`): a `Split` pre-tokenizer with our regex, then the
  `ByteLevel` step that spells each byte as a printable character (GPT-2's map, see
  `bpe_train.bytes_to_unicode`), then a BPE model whose vocabulary and merges are ours
  written in that alphabet. The JSON is written by hand, so exporting needs neither
  library installed.

Both libraries apply merges lowest rank first, as we do, so the ids agree; the tests
check it on real text. One caveat: in those libraries every allowed special token is
matched in the input, like our `encode(text, allowed_special="all")`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ScratchLMError
from .bpe import BPETokenizer
from .bpe_train import bytes_to_unicode


def _unique_vocab(tok: BPETokenizer) -> list[bytes]:
    """Token bytes by id (no specials); other libraries key tokens by their bytes."""
    vocab = [tok.token_bytes(i) for i in range(256 + len(tok.merges))]
    if len(set(vocab)) != len(vocab):
        seen: dict[bytes, int] = {}
        for i, b in enumerate(vocab):
            if b in seen:
                raise ScratchLMError(f"tokens {seen[b]} and {i} spell the same bytes {b!r}; this vocabulary cannot be exported")
            seen[b] = i
    return vocab


# ------------------------------------------------------------------------- tiktoken


def mergeable_ranks(tok: BPETokenizer) -> dict[bytes, int]:
    return {b: i for i, b in enumerate(_unique_vocab(tok))}


def to_tiktoken(tok: BPETokenizer, name: str = "scratchlm"):
    """A `tiktoken.Encoding` that gives the same ids as `tok` (needs `pip install tiktoken`)."""
    try:
        import tiktoken
    except ImportError:
        raise ScratchLMError("exporting to tiktoken needs the tiktoken package: pip install tiktoken") from None
    return tiktoken.Encoding(
        name,
        pat_str=tok.pattern,
        mergeable_ranks=mergeable_ranks(tok),
        special_tokens=dict(tok.special_tokens),
        explicit_n_vocab=tok.vocab_size,
    )


# --------------------------------------------------------------------- Hugging Face


def to_huggingface_json(tok: BPETokenizer) -> dict:
    """The contents of a Hugging Face `tokenizer.json` equivalent to `tok`."""
    b2u = bytes_to_unicode()
    spell = lambda b: "".join(b2u[x] for x in b)  # noqa: E731 - bytes -> GPT-2 alphabet
    vocab = _unique_vocab(tok)
    names = [spell(b) for b in vocab]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
            for s, i in tok.special_tokens.items()
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {n: i for i, n in enumerate(names)},
            # "left right" strings: read by every tokenizers version. Byte-level
            # token names never contain a real space (it is spelled 'Ġ').
            "merges": [f"{names[a]} {names[b]}" for a, b in tok.merges],
        },
    }


def save_huggingface(tok: BPETokenizer, path: str | os.PathLike) -> Path:
    """Write `tokenizer.json`. If `path` is a directory (or has no .json suffix), also
    write a `tokenizer_config.json` beside it so `AutoTokenizer.from_pretrained(dir)`
    works. Returns the path of tokenizer.json."""
    path = Path(path)
    if path.suffix != ".json":
        path.mkdir(parents=True, exist_ok=True)
        specials = list(tok.special_tokens)
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000_000, "clean_up_tokenization_spaces": False}
        if specials:
            config.update(bos_token=specials[0], eos_token=specials[0])
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        path = path / "tokenizer.json"
    path.write_text(json.dumps(to_huggingface_json(tok), ensure_ascii=False), encoding="utf-8")
    return path


def to_transformers(tok: BPETokenizer):
    """A `transformers.PreTrainedTokenizerFast` with the same ids (needs transformers)."""
    try:
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        raise ScratchLMError("exporting to transformers needs: pip install transformers tokenizers") from None
    fast = Tokenizer.from_str(json.dumps(to_huggingface_json(tok)))
    specials = list(tok.special_tokens)
    extra = {"eos_token": specials[0], "bos_token": specials[0]} if specials else {}
    return PreTrainedTokenizerFast(tokenizer_object=fast, clean_up_tokenization_spaces=False, **extra)
