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
   which reproduces exactly the segmentation training arrived at (`_encode_chunk`).
   Chunks repeat a lot, so their encodings are cached; very long chunks use a heap so
   a 100 kB run of one character costs O(n log n), not O(n^2). A fresh text brings
   thousands of new chunks at once: those are merged together with NumPy
   (`batch_merge.py`), same merges, same ids, several times faster.
5. **Special tokens** such as `<|endoftext|>` get ids after the merges. They are never
   produced from ordinary text: a user who types "<|endoftext|>" must not be able to
   end your document. `encode` refuses text containing one unless you allow it
   (`allowed_special`) or declare it plain text (`disallowed_special=()`), as tiktoken does.
6. **Decoding** concatenates the tokens' bytes and decodes UTF-8. A token can end in
   the middle of a character, so streaming generation uses `StreamDecoder`, which holds
   back an incomplete character until its last byte arrives.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import time
from collections.abc import Iterable
from itertools import chain, repeat
from operator import add
from pathlib import Path

import regex

from ..errors import ScratchLMError
from .batch_merge import BatchMerger
from .bpe_train import PARALLEL_MIN_CHARS, _batches, _pool_context, chunk_bytes, count_chunks, default_workers, learn_merges
from .regex_patterns import Splitter, pattern_name, resolve_pattern

FORMAT = "scratchlm-tokenizer"
VERSION = 1

# Chunks longer than this (in bytes) are encoded with the heap (O(n log n)); shorter
# ones with the simple "find the best pair, merge it, look at its neighbours" loop,
# which is faster for the short chunks that make up almost all text.
LONG_CHUNK = 128
# From this many new chunks in one call on, they are merged together with NumPy
# (batch_merge.py); fewer go through the simple loop one by one.
BATCH_MIN = 64
BATCH_CHARS = 4_000_000  # encode_ordinary_batch splits this much text at a time
# The chunk cache is dropped and restarted when it holds this many entries, so
# encoding an endless stream cannot eat all memory.
CACHE_LIMIT = 1 << 18
NO_MERGE = 1 << 62  # the "rank" of a pair that is not a merge


class DisallowedSpecialTokenError(ScratchLMError, ValueError):
    """Text contained a special token's string, and the caller did not say what it means."""


class BPETokenizer:
    type = "bpe"

    # ------------------------------------------------------------------ building

    def __init__(
        self,
        merges: Iterable[tuple[int, int]],
        pattern: str = "gpt4",
        special_tokens: str | Iterable[str] = ("<|endoftext|>",),
        meta: dict | None = None,
    ):
        self.merges: list[tuple[int, int]] = [(int(a), int(b)) for a, b in merges]
        self.pattern: str = resolve_pattern(pattern)
        self._split = Splitter(self.pattern)  # text -> chunks
        n_base = 256 + len(self.merges)
        # Special tokens come right after the merges, in the order given.
        self.special_tokens: dict[str, int] = {}
        for s in _special_names(special_tokens):
            if s in self.special_tokens:
                raise ScratchLMError(f"special token {s!r} is listed twice")
            self.special_tokens[s] = n_base + len(self.special_tokens)
        self.meta: dict = dict(meta or {})

        # id -> bytes, built in merge order (a merge may only use earlier tokens).
        vocab = [bytes([i]) for i in range(256)]
        for i, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                raise ScratchLMError(f"merge {i} uses token ids {a}, {b} that do not exist yet")
            vocab.append(vocab[a] + vocab[b])
        vocab += [s.encode("utf-8") for s in self.special_tokens]
        self._vocab: dict[int, bytes] = dict(enumerate(vocab))

        # The encoder's view of the merges: pair (as the 2-character id-string used by
        # the trainer, see bpe_train.py) -> rank. Merge rank r makes token 256 + r.
        self._ranks: dict[str, int] = {chr(a) + chr(b): r for r, (a, b) in enumerate(self.merges)}
        # A chunk whose bytes are exactly one token's encodes to that token: the merges
        # that built the token happened inside its bytes, never across their edges (a
        # merge across an edge would have consumed an edge byte), so the same merges
        # rebuild it in isolation. tiktoken takes the same shortcut. Bytes that two
        # tokens share (never seen from our trainer) are left to the merge loop.
        # Keyed by the chunk as text: "surrogateescape" turns any bytes into a str and
        # back unchanged, the same way `chunk_bytes` reads a chunk.
        self._whole: dict[str, int] = {}
        shared = set()
        for i, piece in enumerate(vocab[: 256 + len(self.merges)]):
            key = piece.decode("utf-8", "surrogateescape")
            if key in self._whole:
                shared.add(key)
            self._whole[key] = i
        for key in shared:
            del self._whole[key]
        self._batch: BatchMerger | None = None  # built on first use
        self._cache: dict[str, list[int]] = {}
        self._special_split: dict[frozenset, regex.Pattern] = {}

    @classmethod
    def train(
        cls,
        data,
        vocab_size: int,
        pattern: str = "gpt4",
        special_tokens: str | Iterable[str] = ("<|endoftext|>",),
        progress: bool = False,
        workers: int | None = None,
    ) -> "BPETokenizer":
        """Learn a tokenizer of `vocab_size` tokens (256 bytes + merges + special tokens).

        `data` is one string, a `pathlib.Path` to a UTF-8 text file, or an iterable of
        documents (strings or Paths); chunks never span two documents. Counting chunks
        uses `workers` processes for large inputs (default: all cores, up to 8);
        the result does not depend on it. `special_tokens`: names (one bare string
        is one name) that get the last ids.
        """
        special_tokens = _special_names(special_tokens)
        num_merges = int(vocab_size) - 256 - len(special_tokens)
        if num_merges < 0:
            raise ScratchLMError(f"vocab_size {vocab_size} is too small: it must be at least 256 + {len(special_tokens)} special tokens")
        pattern_text = resolve_pattern(pattern)

        digest, n_chars = hashlib.sha256(), 0

        def on_doc(doc: str):
            nonlocal n_chars
            digest.update(doc.encode("utf-8", "surrogatepass"))
            digest.update(b"\x1e")  # documents are hashed with a separator between them
            n_chars += len(doc)

        t0 = time.perf_counter()
        chunks = count_chunks(_as_documents(data), pattern_text, workers=workers, on_doc=on_doc, progress=progress)
        t_count = time.perf_counter() - t0
        merges = learn_merges(chunks, num_merges, progress=progress)
        seconds = time.perf_counter() - t0
        meta = {
            "corpus_sha256": digest.hexdigest(),
            "corpus_chars": n_chars,
            "distinct_chunks": len(chunks),
            "requested_vocab_size": int(vocab_size),
            "training_seconds": round(seconds, 3),
            "counting_seconds": round(t_count, 3),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return cls(merges, pattern=pattern_text, special_tokens=special_tokens, meta=meta)

    # ---------------------------------------------------------------- properties

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self.special_tokens)

    @property
    def pattern_name(self) -> str | None:
        """'gpt2' / 'gpt4' for a built-in pattern, None for a custom one."""
        return pattern_name(self.pattern)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its UTF-8 name)."""
        try:
            return self._vocab[int(token_id)]
        except KeyError:
            raise ScratchLMError(f"token id {token_id} is outside this tokenizer's vocabulary (0..{self.vocab_size - 1})") from None

    def __repr__(self) -> str:
        pat = self.pattern_name or "custom"
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, pattern={pat}, special={list(self.special_tokens)})"

    # ------------------------------------------------------------------ encoding

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply the merges to one chunk, lowest rank first."""
        whole = self._whole.get(chunk)
        if whole is not None:  # the chunk is one token already (see __init__)
            return [whole]
        w = chunk_bytes(chunk).decode("latin-1")  # as in the trainer: one character per token id
        if len(w) > LONG_CHUNK:
            return self._encode_long(w)
        # ranks[i]: the rank of the pair (parts[i], parts[i+1]); pairs that are not
        # merges rank NO_MERGE. `map` with two iterables keeps this loop in C.
        rank_of = self._ranks.get
        parts = list(w)
        ranks = list(map(rank_of, map(add, w, w[1:]), repeat(NO_MERGE)))
        while len(parts) > 1:
            r = min(ranks)  # the earliest-learned pair present in the chunk
            if r == NO_MERGE:
                break  # no pair left that we know how to merge
            i = ranks.index(r)  # its leftmost occurrence, as training merged left to right
            parts[i : i + 2] = [chr(256 + r)]
            del ranks[i]
            # only the two pairs around the new token changed
            if i > 0:
                ranks[i - 1] = rank_of(parts[i - 1] + parts[i], NO_MERGE)
            if i < len(ranks):
                ranks[i] = rank_of(parts[i] + parts[i + 1], NO_MERGE)
        return list(map(ord, parts))

    def _encode_long(self, w: str) -> list[int]:
        """The same merges for a long chunk, with a heap over a linked list.

        Each position holds a token; the heap holds (rank, position) for every
        adjacent pair that is a merge. Popping the lowest rank, leftmost first, and
        merging it matches the simple loop's left-to-right rule. An entry is checked
        when it comes out (its tokens may have been merged away meanwhile).
        """
        import heapq

        ranks = self._ranks
        n = len(w)
        tok = list(map(ord, w))
        nxt = list(range(1, n + 1))  # n means "no next"
        prv = list(range(-1, n - 1))
        alive = [True] * n
        heap = []
        for i in range(n - 1):
            r = ranks.get(w[i] + w[i + 1])
            if r is not None:
                heap.append((r, i))
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if j >= n:
                continue
            a, b = self.merges[r]
            if tok[i] != a or tok[j] != b:
                continue  # stale: this pair changed since the entry was pushed
            tok[i] = 256 + r
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            # New pairs with the neighbours; their ranks are always > r.
            p = prv[i]
            if p >= 0:
                rp = ranks.get(chr(tok[p]) + chr(tok[i]))
                if rp is not None:
                    heapq.heappush(heap, (rp, p))
            k = nxt[i]
            if k < n:
                rk = ranks.get(chr(tok[i]) + chr(tok[k]))
                if rk is not None:
                    heapq.heappush(heap, (rk, i))
        return [tok[i] for i in range(n) if alive[i]]

    def _encode_chunks(self, chunks) -> dict[str, list[int]]:
        """{chunk: ids} for many distinct chunks: `_encode_chunk` for each, or for a large
        batch the same merges done together (batch_merge.py)."""
        chunks = list(chunks)
        if len(chunks) < BATCH_MIN:
            return {c: self._encode_chunk(c) for c in chunks}
        out = {c: [t] for c, t in zip(chunks, map(self._whole.get, chunks)) if t is not None}
        rest = [c for c in chunks if c not in out]
        try:
            raw = [c.encode() for c in rest]
        except UnicodeEncodeError:  # lone surrogates (from encode_bytes)
            raw = list(map(chunk_bytes, rest))
        if max(map(len, raw), default=0) > LONG_CHUNK:
            out.update((c, self._encode_long(b.decode("latin-1"))) for c, b in zip(rest, raw) if len(b) > LONG_CHUNK)
            rest, raw = [c for c in rest if c not in out], [b for b in raw if len(b) <= LONG_CHUNK]
        if self._batch is None:
            self._batch = BatchMerger(self.merges)
        out.update(zip(rest, self._batch.encode(raw)))
        return out

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text with no special-token handling at all (every character is text)."""
        return self.encode_ordinary_batch([text])[0]

    def encode_ordinary_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """`encode_ordinary` of each text. The new chunks of many texts are merged together,
        a group of texts (about BATCH_CHARS characters) at a time to bound memory."""
        return [ids for group in _batches(texts, BATCH_CHARS) for ids in self._encode_group(group)]

    def _encode_group(self, texts: list[str]) -> list[list[int]]:
        split = [self._split(t) for t in texts]
        cache = self._cache
        new = set().union(*split).difference(cache)  # most chunks were seen before
        if new:
            if len(cache) + len(new) > CACHE_LIMIT:
                cache.clear()
            cache.update(self._encode_chunks(new))
        out = [list(chain.from_iterable(map(cache.__getitem__, chunks))) for chunks in split]
        for chunk in new:  # long chunks are rare: not worth their memory
            if len(chunk) > LONG_CHUNK:
                del cache[chunk]
        return out

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
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special")
        for s in disallowed:
            if s in text:
                raise DisallowedSpecialTokenError(
                    f"the text contains the special token {s!r}. If it is meant as that token, pass "
                    f"allowed_special={{{s!r}}}; if it is ordinary text, pass disallowed_special=()"
                )
        return allowed

    def _special_set(self, value, name: str) -> set[str]:
        if value == "all":
            return set(self.special_tokens)
        if isinstance(value, str):
            value = (value,)
        chosen = set(value)
        unknown = chosen - set(self.special_tokens)
        if unknown:
            raise ScratchLMError(f"{name} names {sorted(unknown)}, which are not special tokens of this tokenizer ({list(self.special_tokens)})")
        return chosen

    def encode_bytes(self, data: bytes) -> list[int]:
        """Arbitrary bytes (not necessarily UTF-8) -> ids, with `decode_bytes` as the inverse.

        Invalid bytes become lone surrogates for the regex split (Python's
        "surrogateescape") and turn back into themselves in `chunk_bytes`.
        """
        return self.encode_ordinary(bytes(data).decode("utf-8", "surrogateescape"))

    def encode_batch(self, texts: Iterable[str], workers: int | None = None, **kwargs) -> list[list[int]]:
        """Encode many texts; large batches are spread over processes (same result)."""
        texts = list(texts)
        workers = default_workers() if workers is None else max(1, int(workers))
        total = sum(map(len, texts))
        if workers == 1 or total < 2 * PARALLEL_MIN_CHARS or len(texts) < 2:
            if any([self._check_special(t, **kwargs) for t in texts]):
                return [self.encode(t, **kwargs) for t in texts]
            return self.encode_ordinary_batch(texts)  # no special token allowed: all plain text
        # Contiguous slices of about equal size, one or two per worker.
        n_jobs = min(len(texts), 2 * workers)
        bounds, acc, target, start = [], 0, total / n_jobs, 0
        for i, t in enumerate(texts):
            acc += len(t)
            if acc >= target * (len(bounds) + 1) or i == len(texts) - 1:
                bounds.append((start, i + 1))
                start = i + 1
        state = self.to_dict(include_meta=False)
        with _pool_context().Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
            parts = pool.map(_encode_slice, [(texts[a:b], kwargs) for a, b in bounds])
        return [ids for part in parts for ids in part]

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, ids) -> bytes:
        """Ids -> the raw bytes they stand for (may end mid-character)."""
        if hasattr(ids, "tolist"):  # torch tensors, numpy arrays
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        vocab = self._vocab
        try:
            return b"".join([vocab[i] for i in ids])
        except (KeyError, TypeError):
            for i in ids:
                self.token_bytes(i)  # raises the clear error for the bad id
            raise

    def decode(self, ids) -> str:
        """Ids -> text. Bytes that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self)

    # --------------------------------------------------------------- save / load

    def to_dict(self, include_meta: bool = True) -> dict:
        d = {
            "format": FORMAT,
            "version": VERSION,
            "type": self.type,
            "pattern": self.pattern,
            "pattern_name": self.pattern_name,
            "merges": [[a, b] for a, b in self.merges],
            "special_tokens": dict(self.special_tokens),
        }
        if include_meta:
            d["meta"] = dict(self.meta)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BPETokenizer":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ScratchLMError("not a scratchlm tokenizer file (missing 'format': 'scratchlm-tokenizer')")
        if d.get("type") != cls.type:
            raise ScratchLMError(f"tokenizer file is of type {d.get('type')!r}, not {cls.type!r}")
        if d.get("version") != VERSION:
            raise ScratchLMError(f"BPE tokenizer file has version {d.get('version')!r}; this scratchlm reads version {VERSION}")
        merges, specials, pattern = d.get("merges"), d.get("special_tokens"), d.get("pattern")
        if not isinstance(pattern, str):
            raise ScratchLMError("BPE tokenizer file has no 'pattern' string")
        if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) for m in merges
        ):
            raise ScratchLMError("BPE tokenizer file is corrupt: 'merges' must be a list of [left_id, right_id] pairs")
        if not isinstance(specials, dict) or not all(isinstance(k, str) and type(v) is int for k, v in specials.items()):
            raise ScratchLMError("BPE tokenizer file is corrupt: 'special_tokens' must map names to ids")
        names = sorted(specials, key=specials.get)
        expected = list(range(256 + len(merges), 256 + len(merges) + len(names)))
        if [specials[n] for n in names] != expected:
            raise ScratchLMError(f"BPE tokenizer file is corrupt: special token ids must be {expected}, right after the merges")
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            raise ScratchLMError("BPE tokenizer file is corrupt: 'meta' must be an object")
        return cls(merges, pattern=pattern, special_tokens=names, meta=meta)

    def save(self, path: str | os.PathLike) -> None:
        """Write the versioned JSON file (one merge per line, so it diffs and reads well)."""
        d = self.to_dict()
        merges = d.pop("merges")
        head = json.dumps(d, indent=1, ensure_ascii=False)
        body = ",\n".join(f"  [{a}, {b}]" for a, b in merges)
        text = head[:-2] + ',\n "merges": [\n' + body + "\n ]\n}\n"
        Path(path).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        from . import load_tokenizer

        tok = load_tokenizer(path)
        if not isinstance(tok, cls):
            raise ScratchLMError(f"{path} holds a {tok.type!r} tokenizer, not a BPE tokenizer")
        return tok


class StreamDecoder:
    """Decode ids as they are generated without printing broken characters.

    A token may end halfway through a UTF-8 character (one emoji is 4 bytes and can
    be 2 tokens). `feed` returns only complete characters and keeps the rest until
    the next call; `flush` returns whatever is left (a truly broken tail as U+FFFD).
    """

    def __init__(self, tokenizer: BPETokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids) -> str:
        """Add the next id(s); return the text that is now complete (maybe "")."""
        if isinstance(ids, int):
            ids = [ids]
        return self._utf8.decode(self.tokenizer.decode_bytes(ids), final=False)

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


# ------------------------------------------------------------------------ helpers


def _special_names(special_tokens) -> tuple[str, ...]:
    """Special token names as a tuple; one bare string is one token (not its characters)."""
    names = (special_tokens,) if isinstance(special_tokens, str) else tuple(special_tokens)
    for s in names:
        if not isinstance(s, str) or not s:
            raise ScratchLMError(f"special tokens must be non-empty strings, got {s!r}")
    return names


def _as_documents(data):
    """A str stays one text; a Path is read; an iterable yields documents (Paths read lazily)."""
    if isinstance(data, str):
        return data
    if isinstance(data, os.PathLike):
        return read_text_file(data)
    if isinstance(data, (bytes, bytearray)):
        raise ScratchLMError("train on text (str), a Path, or an iterable of documents, not bytes")
    return (read_text_file(d) if isinstance(d, os.PathLike) else d for d in data)


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 file exactly as it is: newline="" keeps "\r\n" (a tokenizer must see it)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise ScratchLMError(f"data file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ScratchLMError(f"{path} is not UTF-8 text ({e})") from None


_worker_tok: BPETokenizer | None = None


def _init_worker(state: dict) -> None:
    global _worker_tok
    _worker_tok = BPETokenizer.from_dict(state)


def _encode_slice(args) -> list[list[int]]:
    texts, kwargs = args
    return _worker_tok.encode_batch(texts, workers=1, **kwargs)
