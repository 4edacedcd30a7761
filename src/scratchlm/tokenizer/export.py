"""Take a scratchlm BPE tokenizer to other libraries with the same ids, and bring tiktoken ranks in.

* `to_tiktoken(tok)` builds a `tiktoken.Encoding` in memory from our ranks. tiktoken
  describes a byte-level BPE by `mergeable_ranks`: token bytes -> rank, where rank is
  the token id. Ours is exactly that: byte b has rank b, merge i has rank 256 + i.
  `save_tiktoken(tok, folder)` writes the same as files (`tokenizer.tiktoken`, the
  ranks in tiktoken's own format, and `tiktoken.json` with the pattern and special
  tokens); `load_tiktoken(folder)` reads them back. Nothing is downloaded.
* `to_huggingface_json(tok)` / `save_huggingface(tok, path)` write a `tokenizer.json`
  for the Hugging Face `tokenizers` library (and so `transformers`'
  `PreTrainedTokenizerFast`): a `Split` pre-tokenizer with our regex, then the
  `ByteLevel` step that spells each byte as a printable character (GPT-2's map, see
  `bpe_train.bytes_to_unicode`), then a BPE model whose vocabulary and merges are ours
  written in that alphabet. The JSON is written by hand, so exporting needs neither
  library installed.
* `from_tiktoken_ranks(ranks, pattern, special_tokens)` goes the other way: a pretrained
  tiktoken vocabulary (GPT-4's `cl100k_base`) as our tokenizer, by recovering which
  pair of tokens each rank merges.

Where the three agree, and where they cannot (docs/tokenizer.md, "Exports"):

* Both libraries apply merges lowest rank first, as we do, so the ids agree; the tests
  check it on real text. Every allowed special token is matched in the input, like our
  `encode(text, allowed_special="all")`.
* A custom split pattern that skips characters: ours keeps the skipped text as chunks
  of its own, and so does the Hugging Face `Split` step; tiktoken would drop it, so the
  tiktoken export adds an alternative that matches exactly that text.
* Lone surrogates: ours refuses them with an error; the tiktoken Encoding we build
  refuses them the same way (tiktoken alone would turn them into U+FFFD), and the
  `tokenizers` library refuses them (a TypeError).
* Unicode tables: letters and digits (`\\p{L}`, `\\p{N}`) are what the installed `regex`
  module says; tiktoken 0.14 and tokenizers 0.23 use Unicode 16.0. So all three agree
  on every character assigned up to Unicode 16.0; a character added later (U+0558,
  Unicode 17.0) may split differently.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from ..errors import ScratchLMError
from .base import refuse_surrogates
from .bpe import BPETokenizer
from .bpe_train import bytes_to_unicode


def _unique_vocab(tok: BPETokenizer) -> list[bytes]:
    """Token bytes by id (no specials); other libraries key tokens by their bytes."""
    vocab = [tok.token_bytes(i) for i in range(256 + len(tok.merges))]
    if len(set(vocab)) != len(vocab):
        seen: dict[bytes, int] = {}
        for i, b in enumerate(vocab):
            if b in seen:
                raise ScratchLMError(f"tokens {seen[b]} and {i} spell the same bytes {b!r}; "
                                     "this vocabulary cannot be exported")
            seen[b] = i
    return vocab


def check_exportable(tok) -> BPETokenizer:
    """Only byte-level BPE has an equivalent in tiktoken and Hugging Face `tokenizers`."""
    if not isinstance(tok, BPETokenizer):
        raise ScratchLMError(f"only a byte-level BPE tokenizer can be exported; this one is {tok.type!r}")
    return tok


# ------------------------------------------------------------------------- tiktoken


def mergeable_ranks(tok: BPETokenizer) -> dict[bytes, int]:
    return {b: i for i, b in enumerate(_unique_vocab(tok))}


def tiktoken_pattern(tok: BPETokenizer) -> str:
    """Our pattern for tiktoken. A custom pattern gets a last alternative that matches the
    text it skips (up to where it matches again), since tiktoken keeps matches only."""
    if tok.pattern_name is not None:
        return tok.pattern  # built-in patterns match every character
    return f"(?:{tok.pattern})|(?:(?!(?:{tok.pattern}))[\\s\\S])+"


def to_tiktoken(tok: BPETokenizer, name: str = "scratchlm"):
    """A `tiktoken.Encoding` that gives the same ids as `tok` (needs `pip install tiktoken`)."""
    check_exportable(tok)
    return _encoding(name, tiktoken_pattern(tok), mergeable_ranks(tok), dict(tok.special_tokens), tok.vocab_size)


def _encoding(name: str, pattern: str, ranks: dict[bytes, int], special_tokens: dict[str, int], n_vocab: int):
    try:  # optional dependency
        import tiktoken
    except ImportError:
        raise ScratchLMError("exporting to tiktoken needs the tiktoken package: pip install tiktoken") from None

    class Encoding(tiktoken.Encoding):
        """tiktoken's Encoding, refusing lone surrogates as scratchlm does (tiktoken would
        replace them with U+FFFD). The batch methods call these two."""

        def encode_ordinary(self, text, *args, **kwargs):
            refuse_surrogates(text)
            return super().encode_ordinary(text, *args, **kwargs)

        def encode(self, text, *args, **kwargs):
            refuse_surrogates(text)
            return super().encode(text, *args, **kwargs)

    return Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens,
                    explicit_n_vocab=n_vocab)


def save_tiktoken(tok: BPETokenizer, folder: str | os.PathLike) -> Path:
    """Write `tokenizer.tiktoken` (tiktoken's ranks format) and `tiktoken.json` (pattern,
    special tokens) into `folder`; returns the folder. `load_tiktoken` reads them."""
    check_exportable(tok)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = (f"{base64.b64encode(b).decode('ascii')} {i}\n" for b, i in mergeable_ranks(tok).items())
    (folder / "tokenizer.tiktoken").write_text("".join(lines), encoding="ascii")
    info = {"name": "scratchlm", "pat_str": tiktoken_pattern(tok), "special_tokens": tok.special_tokens,
            "explicit_n_vocab": tok.vocab_size, "mergeable_ranks": "tokenizer.tiktoken",
            "how_to_load": "tiktoken.Encoding(name, pat_str=..., mergeable_ranks=tiktoken.load.load_tiktoken_bpe"
                           "('tokenizer.tiktoken'), special_tokens=..., explicit_n_vocab=...)"}
    (folder / "tiktoken.json").write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")
    return folder


def load_tiktoken(folder: str | os.PathLike):
    """The `tiktoken.Encoding` that `save_tiktoken` wrote."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "tiktoken.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ScratchLMError(f"{folder} holds no readable tiktoken.json ({e})") from None
    ranks = read_tiktoken_ranks(folder / info["mergeable_ranks"])
    return _encoding(info["name"], info["pat_str"], ranks, info["special_tokens"], info["explicit_n_vocab"])


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """token bytes -> rank from a `.tiktoken` file (one 'base64 rank' line per token)."""
    ranks = {}
    try:
        for line in Path(path).read_bytes().splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except (OSError, ValueError) as e:
        raise ScratchLMError(f"cannot read tiktoken ranks from {path}: {e}") from None
    return ranks


def from_tiktoken_ranks(ranks: dict[bytes, int], pattern: str,
                        special_tokens: dict[str, int]) -> tuple[BPETokenizer, list[int]]:
    """A pretrained tiktoken vocabulary as our BPETokenizer, and `their_id[our_id]`.

    tiktoken keeps no merge list, only ranks: at each step it merges the adjacent pair
    whose joined bytes have the lowest rank. Which pair makes a token is recovered by
    running that rule on the token's own bytes with only lower ranks allowed: it ends
    in exactly two parts, the merge. Our ids number the same tokens in our own order
    (bytes by value, then merges by rank, then specials), so the second value maps
    ours to theirs; GPT-4's cl100k_base, for one, ranks single bytes in GPT-2's
    printable order, not by value.
    """
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    singles = {b: r for b, r in ranks.items() if len(b) == 1}
    if len(singles) != 256 or max(singles.values()) > min((r for b, r in by_rank if len(b) > 1), default=256):
        raise ScratchLMError("tiktoken ranks must hold all 256 single bytes, ranked before every longer token")
    our_id = {bytes([b]): b for b in range(256)}
    merges, theirs = [], [ranks[bytes([b])] for b in range(256)]
    for token, rank in by_rank:
        if len(token) == 1:
            continue
        left, right = _last_merge(token, rank, ranks)
        merges.append((our_id[left], our_id[right]))
        our_id[token] = 255 + len(merges)
        theirs.append(rank)
    names = sorted(special_tokens, key=special_tokens.get)
    tok = BPETokenizer(merges, pattern=pattern, special_tokens=names, meta={"imported_from": "tiktoken ranks"})
    return tok, theirs + [special_tokens[n] for n in names]


def _last_merge(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts BPE joins to make `token`: tiktoken's rule on its bytes, ranks below `rank`."""
    parts = [token[i : i + 1] for i in range(len(token))]
    pair_ranks = [ranks.get(a + b, rank) for a, b in zip(parts, parts[1:])]  # `rank` = not allowed
    while len(parts) > 2:
        best = min(pair_ranks)
        if best >= rank:
            break
        i = pair_ranks.index(best)  # leftmost, as tiktoken does
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], rank)
        if i < len(pair_ranks):
            pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], rank)
    if len(parts) != 2:
        raise ScratchLMError(f"tiktoken rank {rank} ({token!r}) cannot be built from two lower-ranked tokens")
    return parts[0], parts[1]


# --------------------------------------------------------------------- Hugging Face


def to_huggingface_json(tok: BPETokenizer) -> dict:
    """The contents of a Hugging Face `tokenizer.json` equivalent to `tok`."""
    check_exportable(tok)
    b2u = bytes_to_unicode()
    names = ["".join(b2u[x] for x in b) for b in _unique_vocab(tok)]  # bytes -> GPT-2 alphabet
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True}
            for s, i in tok.special_tokens.items()
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                # "Isolated": matches and the text between them are pieces of their own,
                # as in our split (a custom pattern's gaps are kept)
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
    data = to_huggingface_json(tok)
    if path.suffix != ".json":
        path.mkdir(parents=True, exist_ok=True)
        specials = list(tok.special_tokens)
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000_000,
                  "clean_up_tokenization_spaces": False}
        if specials:
            config.update(bos_token=specials[0], eos_token=specials[0])
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        path = path / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def to_transformers(tok: BPETokenizer):
    """A `transformers.PreTrainedTokenizerFast` with the same ids (needs transformers)."""
    try:  # optional dependencies
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        raise ScratchLMError("exporting to transformers needs: pip install transformers tokenizers") from None
    fast = Tokenizer.from_str(json.dumps(to_huggingface_json(tok)))
    specials = list(tok.special_tokens)
    extra = {"eos_token": specials[0], "bos_token": specials[0]} if specials else {}
    return PreTrainedTokenizerFast(tokenizer_object=fast, clean_up_tokenization_spaces=False, **extra)
