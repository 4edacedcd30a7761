"""Byte-level BPE: the tokenizer of GPT-2, GPT-4 and most LLMs since, written out.

What this file teaches, top to bottom:

1. **Bytes are the alphabet.** Text becomes UTF-8 bytes, and the 256 byte values are
   the first 256 tokens. Any string, in any script, with emoji or NUL bytes in it, is
   a sequence of these: there is no "unknown token", ever.
2. **Split before merging.** A regex cuts text into chunks (words with their leading
   space, digit groups, punctuation runs, whitespace; see `regex_patterns.py`). Merges
   are learned and applied inside a chunk only.
3. **Training** repeatedly merges the most frequent adjacent pair of tokens into a new
   token: merge i makes token 256 + i. The fast trainer lives in `bpe_train.py`, the
   textbook one in `naive.py`; they learn identical merges.
4. **Encoding** replays the merges on each chunk, lowest rank (earliest learned) first,
   which reproduces exactly the segmentation training arrived at (`encode_chunk`).
   Real text goes through `fast.py`, which gives the same ids faster (a chunk cache,
   NumPy batches, a heap for long chunks).
5. **Special tokens** such as `<|endoftext|>` get ids after the merges. They are never
   produced from ordinary text: a user who types "<|endoftext|>" must not be able to
   end your document. `encode` refuses text containing one unless you allow it
   (`allowed_special`) or declare it plain text (`disallowed_special=()`), as tiktoken does.
6. **Decoding** concatenates the tokens' bytes and decodes UTF-8. A token can end in
   the middle of a character, so streaming generation uses `base.StreamDecoder`.

Text must be a sequence of real characters: a lone surrogate ("\\ud800", which a Python
string can hold but UTF-8 cannot) is refused with an error. `encode_bytes` takes
arbitrary bytes instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

import regex

from ..errors import ScratchLMError
from .base import FORMAT, StreamDecoder, as_ids, read_json, refuse_surrogates
from .bpe_train import PARALLEL_MIN_CHARS, as_documents, chunk_bytes, count_chunks, default_workers, learn_merges
from .fast import FastEncoder, encode_in_processes
from .naive import merge
from .regex_patterns import pattern_name, resolve_pattern

VERSION = 1


class DisallowedSpecialTokenError(ScratchLMError, ValueError):
    """Text contained a special token's string, and the caller did not say what it means."""

    def __init__(self, token: str):
        self.token = token
        super().__init__(f"the text contains the special token {token!r}. If it is meant as that token, pass "
                         f"allowed_special={{{token!r}}}; if it is ordinary text, pass disallowed_special=()")

    def __reduce__(self):  # raised in a worker process, it crosses back by its token
        return DisallowedSpecialTokenError, (self.token,)


class BPETokenizer:
    """A byte-level BPE tokenizer: 256 byte tokens, the learned merges, special tokens.

    `merges[i] = (a, b)` makes token 256 + i from tokens a and b; special tokens come
    after the merges. Build one with `BPETokenizer.train(text, vocab_size)` or
    `BPETokenizer.load(path)`; it implements the `Tokenizer` protocol (base.py) and is
    safe to share between threads.
    """

    type = "bpe"

    def __init__(self, merges: Iterable[tuple[int, int]], pattern: str = "gpt4",
                 special_tokens: str | Iterable[str] = ("<|endoftext|>",), meta: dict | None = None):
        self.merges: list[tuple[int, int]] = [(int(a), int(b)) for a, b in merges]
        self.pattern: str = resolve_pattern(pattern)
        # Special tokens come right after the merges, in the order given.
        n_base = 256 + len(self.merges)
        self.special_tokens = {s: n_base + k for k, s in enumerate(_special_names(special_tokens))}
        self.meta: dict = dict(meta or {})
        # A merge may only use tokens that exist before it, and each pair is merged once:
        # a second rank for the same pair would never fire, a sign of a corrupt file.
        self.ranks: dict[tuple[int, int], int] = {}
        vocab = [bytes([i]) for i in range(256)]  # id -> the bytes it stands for
        for i, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                raise ScratchLMError(f"merge {i} uses token ids {a}, {b} that do not exist yet (ranks out of order?)")
            if (a, b) in self.ranks:
                raise ScratchLMError(f"merge {i} repeats merge {self.ranks[a, b]} ({a}, {b}): each pair is merged once")
            self.ranks[a, b] = i
            vocab.append(vocab[a] + vocab[b])
        self._vocab = vocab + [s.encode("utf-8") for s in self.special_tokens]
        self._fast = FastEncoder(self.merges, vocab, self.pattern)
        self._special_split: dict[frozenset, regex.Pattern] = {}

    @classmethod
    def train(cls, data, vocab_size: int, pattern: str = "gpt4",
              special_tokens: str | Iterable[str] = ("<|endoftext|>",), progress: bool = False,
              workers: int | None = None) -> "BPETokenizer":
        """Learn a tokenizer of `vocab_size` tokens (256 bytes + merges + special tokens).

        `data` is one string, a `pathlib.Path` to a UTF-8 text file, or an iterable of
        documents (strings or Paths); chunks never span two documents. Counting chunks
        uses `workers` processes for large inputs (default: all cores, up to 8); the
        result does not depend on it. `special_tokens`: names that get the last ids.
        """
        special_tokens = _special_names(special_tokens)  # checked before any work
        num_merges = int(vocab_size) - 256 - len(special_tokens)
        if num_merges < 0:
            raise ScratchLMError(f"vocab_size {vocab_size} is too small: it must be at least 256 + "
                                 f"{len(special_tokens)} special tokens")
        pattern_text = resolve_pattern(pattern)
        digest, n_chars = hashlib.sha256(), 0

        def on_doc(doc: str):
            nonlocal n_chars
            refuse_surrogates(doc)
            digest.update(doc.encode("utf-8"))
            digest.update(b"\x1e")  # documents are hashed with a separator between them
            n_chars += len(doc)

        t0 = time.perf_counter()
        chunks = count_chunks(as_documents(data), pattern_text, workers=workers, on_doc=on_doc, progress=progress)
        t_count = time.perf_counter() - t0
        merges = learn_merges(chunks, num_merges, progress=progress)
        meta = {
            "corpus_sha256": digest.hexdigest(), "corpus_chars": n_chars, "distinct_chunks": len(chunks),
            "requested_vocab_size": int(vocab_size), "training_seconds": round(time.perf_counter() - t0, 3),
            "counting_seconds": round(t_count, 3), "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return cls(merges, pattern=pattern_text, special_tokens=special_tokens, meta=meta)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def pattern_name(self) -> str | None:
        """'gpt2' / 'gpt4' for a built-in pattern, None for a custom one."""
        return pattern_name(self.pattern)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its UTF-8 name)."""
        return self._vocab[as_ids([token_id], self.vocab_size)[0]]

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"pattern={self.pattern_name or 'custom'}, special={list(self.special_tokens)})")

    def __reduce__(self):  # pickles as its JSON data (worker processes get a copy)
        return BPETokenizer.from_dict, (self.to_dict(),)

    # ------------------------------------------------------------------ encoding

    def encode_chunk(self, chunk: bytes) -> list[int]:
        """The merges applied to one chunk: the definition of BPE encoding.

        Start from the bytes; while some adjacent pair is a merge, merge the pair
        learned earliest (lowest rank) wherever it occurs; stop when no pair is left.
        `fast.py` gets the same ids faster; the tests hold it to this loop.
        """
        ids = list(chunk)
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, len(self.merges)))
            if pair not in self.ranks:
                break  # no pair left that we know how to merge
            ids = merge(ids, pair, 256 + self.ranks[pair])
        return ids

    def encode_simple(self, text: str) -> list[int]:
        """`encode_ordinary` the plain way: split, then `encode_chunk` each chunk."""
        refuse_surrogates(text)
        return [i for chunk in self._fast.split(text) for i in self.encode_chunk(chunk_bytes(chunk))]

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text with no special-token handling at all (every character is text)."""
        return self.encode_ordinary_batch([text])[0]

    def encode_ordinary_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """`encode_ordinary` of each text, in this process (the new chunks of all texts are
        merged together, which is what makes a batch fast)."""
        texts = list(texts)
        for t in texts:
            refuse_surrogates(t)
        return self._fast.encode_texts(texts)

    def encode(self, text: str, allowed_special=(), disallowed_special="all") -> list[int]:
        """Text -> token ids.

        `allowed_special`: special tokens ("all" or a set of names) that, where they
        occur in `text`, become their special id. `disallowed_special` ("all" = every
        special token not allowed): if one of these occurs in `text`, raise
        `DisallowedSpecialTokenError`. Pass `disallowed_special=()` to encode them as
        ordinary text instead (e.g. a web page that talks about "<|endoftext|>").
        """
        allowed = self._check_special(text, allowed_special, disallowed_special)
        if not allowed:
            return self.encode_ordinary(text)
        special_re = self._special_split.get(frozenset(allowed))
        if special_re is None:  # longest first, so a special that contains another wins
            alts = "|".join(regex.escape(s) for s in sorted(allowed, key=lambda s: (-len(s), s)))
            special_re = self._special_split[frozenset(allowed)] = regex.compile(f"({alts})")
        out: list[int] = []
        # With one capture group, split() alternates text, special, text, special, ...
        for k, piece in enumerate(special_re.split(text)):
            if k % 2:
                out.append(self.special_tokens[piece])
            elif piece:
                out.extend(self.encode_ordinary(piece))
        return out

    def _check_special(self, text: str, allowed_special=(), disallowed_special="all") -> set[str]:
        """The allowed special tokens; raises if `text` holds a disallowed one."""
        allowed = self._special_set(allowed_special, "allowed_special")
        disallowed = (set(self.special_tokens) - allowed if disallowed_special == "all"
                      else self._special_set(disallowed_special, "disallowed_special"))
        for s in disallowed:
            if s in text:
                raise DisallowedSpecialTokenError(s)
        return allowed

    def _special_set(self, value, name: str) -> set[str]:
        chosen = set(self.special_tokens) if value == "all" else {value} if isinstance(value, str) else set(value)
        unknown = chosen - set(self.special_tokens)
        if unknown:
            raise ScratchLMError(f"{name} names {sorted(unknown)}, which are not special tokens of this tokenizer "
                                 f"({list(self.special_tokens)})")
        return chosen

    def encode_bytes(self, data: bytes) -> list[int]:
        """Arbitrary bytes (not necessarily UTF-8) -> ids, with `decode_bytes` as the inverse.

        Invalid bytes become surrogate escapes for the regex split (Python's
        "surrogateescape") and turn back into themselves in `chunk_bytes`.
        """
        return self._fast.encode_texts([bytes(data).decode("utf-8", "surrogateescape")])[0]

    def encode_batch(self, texts: Iterable[str], workers: int | None = None, **kwargs) -> list[list[int]]:
        """`encode(text, **kwargs)` of many texts; large batches are spread over processes."""
        texts = list(texts)
        workers = default_workers() if workers is None else max(1, int(workers))
        total = sum(map(len, texts))
        if workers > 1 and total >= 2 * PARALLEL_MIN_CHARS and len(texts) > 1:
            return encode_in_processes(self, texts, workers, kwargs)  # each worker calls this with workers=1
        if any([self._check_special(t, **kwargs) for t in texts]):
            return [self.encode(t, **kwargs) for t in texts]
        return self.encode_ordinary_batch(texts)  # no special token allowed: all plain text

    def encode_documents(self, docs: list[str]) -> list[list[int]]:
        """A corpus: special-token strings in it are plain text (see the `Tokenizer` protocol)."""
        return self.encode_batch(docs, disallowed_special=())

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, ids) -> bytes:
        """Ids -> the raw bytes they stand for (may end mid-character)."""
        return b"".join(map(self._vocab.__getitem__, as_ids(ids, self.vocab_size)))

    def decode(self, ids) -> str:
        """Ids -> text. Bytes that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    # --------------------------------------------------------------- save / load

    def to_dict(self, include_meta: bool = True) -> dict:
        d = {"format": FORMAT, "version": VERSION, "type": self.type, "pattern": self.pattern,
             "pattern_name": self.pattern_name, "merges": [[a, b] for a, b in self.merges],
             "special_tokens": dict(self.special_tokens)}
        if include_meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        """Rebuild from `to_dict`'s data, refusing anything that does not add up."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ScratchLMError(f"not a scratchlm tokenizer file (missing 'format': '{FORMAT}')")
        if d.get("type") != cls.type:
            raise ScratchLMError(f"tokenizer file is of type {d.get('type')!r}, not {cls.type!r}")
        if d.get("version") != VERSION:
            raise ScratchLMError(f"BPE tokenizer file has version {d.get('version')!r}; "
                                 f"this scratchlm reads version {VERSION}")
        merges, specials, pattern = d.get("merges"), d.get("special_tokens"), d.get("pattern")
        meta = d.get("meta") or {}
        if not isinstance(pattern, str):
            raise ScratchLMError("BPE tokenizer file has no 'pattern' string")
        if not isinstance(merges, list) or not all(
                isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) for m in merges):
            raise ScratchLMError("BPE tokenizer file is corrupt: 'merges' must be a list of [left_id, right_id] pairs")
        if not isinstance(specials, dict) or not all(type(v) is int for v in specials.values()):
            raise ScratchLMError("BPE tokenizer file is corrupt: 'special_tokens' must map names to ids")
        names = sorted(specials, key=specials.get)
        expected = list(range(256 + len(merges), 256 + len(merges) + len(names)))
        if [specials[n] for n in names] != expected:
            raise ScratchLMError(f"BPE tokenizer file is corrupt: special token ids must be {expected}, "
                                 "right after the merges")
        if not isinstance(meta, dict):
            raise ScratchLMError("BPE tokenizer file is corrupt: 'meta' must be an object")
        return cls(merges, pattern=pattern, special_tokens=names, meta=meta)

    def save(self, path: str | os.PathLike) -> None:
        """Write the versioned JSON file (one merge per line, so it diffs and reads well)."""
        d = self.to_dict()
        merges = d.pop("merges")
        head = json.dumps(d, indent=1, ensure_ascii=False)
        body = ",\n".join(f"  [{a}, {b}]" for a, b in merges)
        Path(path).write_text(head[:-2] + ',\n "merges": [\n' + body + "\n ]\n}\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        d = read_json(path)
        if d.get("type") != cls.type:
            raise ScratchLMError(f"{path} holds a {d.get('type')!r} tokenizer, not a BPE tokenizer")
        return cls.from_dict(d)


# ------------------------------------------------------------------------ helpers


def _special_names(special_tokens) -> tuple[str, ...]:
    """Special token names as a tuple; one bare string is one token (not its characters)."""
    names = (special_tokens,) if isinstance(special_tokens, str) else tuple(special_tokens)
    for s in names:
        if not isinstance(s, str) or not s:
            raise ScratchLMError(f"special tokens must be non-empty strings, got {s!r}")
        if names.count(s) > 1:
            raise ScratchLMError(f"special token {s!r} is listed twice")
    return names
