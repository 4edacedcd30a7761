"""Word-level BPE as in the original paper (Sennrich, Haddow & Birch, 2016).

Before byte-level BPE there was this: split text on whitespace into words, spell
each word as characters plus an end-of-word marker `</w>`, and learn merges of
adjacent symbols inside words:

    "lower" -> l o w e r </w>  ->  ... ->  low er</w>

The marker lets "er" at the end of a word ("lower") differ from "er" inside one
("eerie"), and lets decoding put the spaces back.

It is small and it works, but it shows the two problems byte-level BPE fixes:

* **Unknown characters.** The base alphabet is the characters seen in training. A
  character that never appeared (an emoji, a letter from another script, a curly
  quote) has no symbol and becomes `<unk>`: the information is lost for good.
  Byte-level BPE starts from the 256 bytes, so every string can be encoded.
* **Whitespace is thrown away.** `str.split()` forgets tabs, newlines and repeated
  spaces; decoding puts back single spaces. Code and poetry suffer.

This is a teaching tokenizer (strings in, strings out, a plain loop); use
`BPETokenizer` for real work.
"""

from __future__ import annotations

import heapq
import os
from collections import Counter, defaultdict

from ..errors import ScratchLMError
from .base import FORMAT, as_ids, save_json

EOW = "</w>"
UNK = "<unk>"


def _pair_counts(words: dict[tuple[str, ...], int]) -> Counter:
    counts: Counter = Counter()
    for symbols, freq in words.items():
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += freq
    return counts


def _merge_word(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def learn_merges_naive(words: dict[tuple[str, ...], int], num_merges: int) -> list[tuple[str, str]]:
    """The paper's loop: count all pairs, merge the most frequent, repeat.

    Ties go to the alphabetically first pair, so training is deterministic.
    """
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        counts = _pair_counts(words)
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        words = {_merge_word(s, best): f for s, f in words.items()}
        merges.append(best)
    return merges


def learn_merges(words: dict[tuple[str, ...], int], num_merges: int) -> list[tuple[str, str]]:
    """The same merges as `learn_merges_naive`, without recounting the corpus each time.

    Pair counts are kept up to date: merging touches only the words that hold the
    pair (an index from pair to words), whose old pairs are subtracted and new pairs
    added. The best pair comes from a heap whose stale entries are fixed when popped
    (the idea of bpe_train.py, here on string symbols).
    """
    forms = list(words)
    freqs = [words[w] for w in forms]
    counts: defaultdict[tuple[str, str], int] = defaultdict(int)
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for wi, w in enumerate(forms):
        for p in zip(w, w[1:]):
            counts[p] += freqs[wi]
            where[p].add(wi)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges and heap:
        neg, best = heapq.heappop(heap)
        c = counts.get(best, 0)
        if c <= 0:
            continue
        if c != -neg:  # stale entry: back with its true count
            heapq.heappush(heap, (-c, best))
            continue
        merges.append(best)
        grown = set()
        for wi in where.pop(best):
            old = forms[wi]
            new = _merge_word(old, best)
            if new == old:
                continue  # the index was stale
            f = freqs[wi]
            for p in zip(old, old[1:]):
                counts[p] -= f
            for p in zip(new, new[1:]):
                counts[p] += f
                where[p].add(wi)
                grown.add(p)
            forms[wi] = new
        counts.pop(best, None)
        for p in grown - {best}:
            heapq.heappush(heap, (-counts[p], p))
    return merges


class WordBPETokenizer:
    """Word-level BPE: characters of the training words plus `</w>`, and learned merges.

    Ids: `<unk>`, the characters, `</w>`, one per merge, then any special tokens.
    """

    type = "wordbpe"

    def __init__(self, alphabet: list[str], merges: list[tuple[str, str]], special_tokens=()):
        self.alphabet = list(alphabet)
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: r for r, m in enumerate(self.merges)}
        self.symbols = [UNK, *self.alphabet, EOW, *(a + b for a, b in self.merges)]
        names = (special_tokens,) if isinstance(special_tokens, str) else tuple(special_tokens)
        if len(set(names)) != len(names) or not all(isinstance(s, str) and s for s in names):
            raise ScratchLMError(f"special tokens must be distinct non-empty strings, got {list(names)}")
        self.special_tokens = {s: len(self.symbols) + k for k, s in enumerate(names)}
        self.symbols += names
        self.ids = {s: i for i, s in enumerate(self.symbols[: len(self.symbols) - len(names)])}
        self.known = set(self.alphabet)
        self.unk_id = 0

    @classmethod
    def train(cls, text: str, num_merges: int | None = None, *, vocab_size: int | None = None,
              special_tokens=()) -> "WordBPETokenizer":
        """Learn `num_merges` merges, or as many as make `vocab_size` ids, from the words of `text`."""
        word_freq = Counter(text.split())
        words = {tuple(w) + (EOW,): f for w, f in word_freq.items()}
        alphabet = sorted({ch for w in word_freq for ch in w})
        n_special = 1 if isinstance(special_tokens, str) else len(tuple(special_tokens))
        if vocab_size is not None:
            num_merges = int(vocab_size) - len(alphabet) - 2 - n_special
            if num_merges < 0:
                raise ScratchLMError(f"vocab_size {vocab_size} is too small for word-level BPE on this text: its "
                                     f"{len(alphabet)} characters, <unk>, </w> and {n_special} special tokens need "
                                     f"{len(alphabet) + 2 + n_special}")
        if num_merges is None:
            raise ScratchLMError("word-level BPE training needs num_merges or vocab_size")
        return cls(alphabet, learn_merges(words, num_merges), special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def tokenize(self, text: str) -> list[str]:
        """Text -> symbols. Characters not seen in training become '<unk>'."""
        out: list[str] = []
        for word in text.split():
            symbols = tuple(ch if ch in self.known else UNK for ch in word) + (EOW,)
            while len(symbols) > 1:
                pairs = [p for p in zip(symbols, symbols[1:]) if p in self.ranks]
                if not pairs:
                    break
                symbols = _merge_word(symbols, min(pairs, key=self.ranks.__getitem__))
            out.extend(symbols)
        return out

    def encode(self, text: str) -> list[int]:
        """Text -> ids. A special token's string in the text is spelled as characters."""
        return [self.ids[s] for s in self.tokenize(text)]

    def encode_documents(self, docs: list[str]) -> list[list[int]]:
        return [self.encode(d) for d in docs]

    def decode(self, ids) -> str:
        """Ids -> text: '</w>' becomes a space. Unknown characters stay '<unk>'."""
        text = "".join(map(self.symbols.__getitem__, as_ids(ids, self.vocab_size)))
        return text.replace(EOW, " ").rstrip(" ")

    def token_bytes(self, token_id: int) -> bytes:
        """A symbol's text, '</w>' as the space it stands for (so streamed words are spaced)."""
        return self.symbols[as_ids([token_id], self.vocab_size)[0]].replace(EOW, " ").encode("utf-8")

    def unknown_fraction(self, text: str) -> float:
        """The share of symbols that are '<unk>' when encoding `text`."""
        toks = self.tokenize(text)
        return toks.count(UNK) / max(1, len(toks))

    def to_dict(self, include_meta: bool = True) -> dict:
        return {"format": FORMAT, "version": 1, "type": self.type, "alphabet": self.alphabet,
                "merges": [list(m) for m in self.merges], "special_tokens": dict(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> "WordBPETokenizer":
        if d.get("version") != 1 or not isinstance(d.get("alphabet"), list) or not isinstance(d.get("merges"), list):
            raise ScratchLMError("word-BPE tokenizer file has an unknown version or is missing 'alphabet'/'merges'")
        if not all(isinstance(c, str) for c in d["alphabet"]):
            raise ScratchLMError("word-BPE tokenizer file is corrupt: 'alphabet' must be a list of strings")
        for i, m in enumerate(d["merges"]):
            if not (isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m)):
                raise ScratchLMError(f"word-BPE tokenizer file is corrupt: merge {i} is {m!r}, not a pair of strings")
        specials = d.get("special_tokens") or {}
        if not isinstance(specials, dict) or not all(type(v) is int for v in specials.values()):
            raise ScratchLMError("word-BPE tokenizer file is corrupt: 'special_tokens' must map names to ids")
        tok = cls(d["alphabet"], [tuple(m) for m in d["merges"]], sorted(specials, key=specials.get))
        if tok.special_tokens != specials:
            raise ScratchLMError("word-BPE tokenizer file is corrupt: special token ids must follow the merges")
        return tok

    def save(self, path: str | os.PathLike) -> None:
        save_json(self.to_dict(), path)
