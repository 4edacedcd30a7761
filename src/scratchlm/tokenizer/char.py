"""The simplest tokenizer: one id per distinct character of the training text.

It is the classic Tiny Shakespeare baseline (65 characters). Characters not seen
in training cannot be encoded: that limitation is why byte-level BPE exists.
"""

from __future__ import annotations

from ..errors import ScratchLMError


class CharTokenizer:
    type = "char"

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ScratchLMError(f"character {e.args[0]!r} was not in the training text of this character tokenizer") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self, include_meta: bool = True) -> dict:
        return {"format": "scratchlm-tokenizer", "version": 1, "type": self.type, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if d.get("version") != 1 or not isinstance(d.get("chars"), list):
            raise ScratchLMError("character tokenizer file has an unknown version or no 'chars' list")
        return cls(d["chars"])
