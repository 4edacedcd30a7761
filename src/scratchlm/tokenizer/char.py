"""The simplest tokenizer: one id per distinct character of the training text.

It is the classic Tiny Shakespeare baseline (65 characters). Characters not seen
in training cannot be encoded: that limitation is why byte-level BPE exists.
"""

from __future__ import annotations

import os

from ..errors import ScratchLMError
from .base import FORMAT, as_ids, save_json


class CharTokenizer:
    """One token per character seen in training, numbered in sorted order."""

    type = "char"

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.special_tokens: dict[str, int] = {}  # none: every id is a character

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
            raise ScratchLMError(f"character {e.args[0]!r} was not in the training text of this character "
                                 "tokenizer") from None

    def encode_documents(self, docs: list[str]) -> list[list[int]]:
        return [self.encode(d) for d in docs]

    def decode(self, ids) -> str:
        return "".join(map(self.chars.__getitem__, as_ids(ids, self.vocab_size)))

    def token_bytes(self, token_id: int) -> bytes:
        return self.chars[as_ids([token_id], self.vocab_size)[0]].encode("utf-8", "surrogatepass")

    def to_dict(self, include_meta: bool = True) -> dict:
        return {"format": FORMAT, "version": 1, "type": self.type, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        chars = d.get("chars")
        if d.get("version") != 1 or not isinstance(chars, list):
            raise ScratchLMError("character tokenizer file has an unknown version or no 'chars' list")
        if not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
            raise ScratchLMError("character tokenizer file is corrupt: 'chars' must be distinct one-character strings")
        return cls(chars)

    def save(self, path: str | os.PathLike) -> None:
        save_json(self.to_dict(), path)
