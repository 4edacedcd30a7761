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

from collections import Counter

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


class WordBPETokenizer:
    type = "wordbpe"

    def __init__(self, alphabet: list[str], merges: list[tuple[str, str]]):
        self.alphabet = list(alphabet)
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: r for r, m in enumerate(self.merges)}
        # ids: <unk>, the characters, </w>, then one per merge
        self.symbols = [UNK, *self.alphabet, EOW, *(a + b for a, b in self.merges)]
        self.ids = {s: i for i, s in enumerate(self.symbols)}  # a later duplicate keeps its own id last
        self.unk_id = 0

    @classmethod
    def train(cls, text: str, num_merges: int) -> "WordBPETokenizer":
        """Learn up to `num_merges` merges from the words of `text`."""
        word_freq = Counter(text.split())
        words = {tuple(w) + (EOW,): f for w, f in word_freq.items()}
        alphabet = sorted({ch for w in word_freq for ch in w})
        merges: list[tuple[str, str]] = []
        for _ in range(num_merges):
            counts = _pair_counts(words)
            if not counts:
                break
            # most frequent; ties go to the alphabetically first pair (deterministic)
            best = min(counts, key=lambda p: (-counts[p], p))
            words = {_merge_word(s, best): f for s, f in words.items()}
            merges.append(best)
        return cls(alphabet, merges)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def tokenize(self, text: str) -> list[str]:
        """Text -> symbols. Characters not seen in training become '<unk>'."""
        out: list[str] = []
        known = set(self.alphabet)
        for word in text.split():
            symbols = tuple(ch if ch in known else UNK for ch in word) + (EOW,)
            while len(symbols) > 1:
                pairs = [p for p in zip(symbols, symbols[1:]) if p in self.ranks]
                if not pairs:
                    break
                symbols = _merge_word(symbols, min(pairs, key=self.ranks.__getitem__))
            out.extend(symbols)
        return out

    def encode(self, text: str) -> list[int]:
        return [self.ids[s] for s in self.tokenize(text)]

    def decode(self, ids) -> str:
        """Ids -> text: '</w>' becomes a space. Unknown characters stay '<unk>'."""
        text = "".join(self.symbols[int(i)] for i in ids)
        return text.replace(EOW, " ").rstrip(" ")

    def unknown_fraction(self, text: str) -> float:
        """The share of symbols that are '<unk>' when encoding `text`."""
        toks = self.tokenize(text)
        return toks.count(UNK) / max(1, len(toks))

    def to_dict(self, include_meta: bool = True) -> dict:
        return {"format": "scratchlm-tokenizer", "version": 1, "type": self.type, "alphabet": self.alphabet, "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_dict(cls, d: dict) -> "WordBPETokenizer":
        from ..errors import ScratchLMError

        if d.get("version") != 1 or not isinstance(d.get("alphabet"), list) or not isinstance(d.get("merges"), list):
            raise ScratchLMError("word-BPE tokenizer file has an unknown version or is missing 'alphabet'/'merges'")
        if not all(isinstance(c, str) for c in d["alphabet"]):
            raise ScratchLMError("word-BPE tokenizer file is corrupt: 'alphabet' must be a list of strings")
        for i, m in enumerate(d["merges"]):
            if not (isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m)):
                raise ScratchLMError(f"word-BPE tokenizer file is corrupt: merge {i} is {m!r}, not a pair of strings")
        return cls(d["alphabet"], [tuple(m) for m in d["merges"]])
