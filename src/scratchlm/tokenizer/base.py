"""What every scratchlm tokenizer is: the `Tokenizer` protocol, its file format, streaming decode.

Three tokenizers implement the protocol: byte-level BPE (`bpe.py`, the one to use),
the original word-level BPE with `</w>` (`wordbpe.py`) and one id per character
(`char.py`). The rest of scratchlm (data, training, sampling) only uses the names
below, so any of them can train a model.
"""

from __future__ import annotations

import codecs
import json
import operator
import os
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import ScratchLMError

FORMAT = "scratchlm-tokenizer"  # every tokenizer file says {"format": FORMAT, "type": ..., ...}
_SURROGATE = re.compile("[\ud800-\udfff]")


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> integer ids, and what each id stands for."""

    type: str  # "bpe", "wordbpe" or "char": the `type` written in its file
    special_tokens: dict[str, int]  # control tokens such as <|endoftext|> -> id (may be empty)

    @property
    def vocab_size(self) -> int:
        """Ids run from 0 to vocab_size - 1."""
        ...

    def encode(self, text: str) -> list[int]:
        """Text -> ids. Where special tokens exist, their strings in `text` are refused."""
        ...

    def encode_documents(self, docs: list[str]) -> list[list[int]]:
        """A corpus -> ids per document: every character is text, a special token's string
        included (a document cannot inject a control token). May use several processes."""
        ...

    def decode(self, ids) -> str:
        """Ids (a list, array or tensor of integers) -> text."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes one id stands for (a special token: its name). Byte-level BPE
        tokens may end inside a character; `StreamDecoder` puts such pieces together."""
        ...

    def to_dict(self, include_meta: bool = True) -> dict:
        """Everything needed to rebuild it, as JSON-ready data with 'format' and 'type'."""
        ...

    def save(self, path: str | os.PathLike) -> None:
        ...


def save_json(d: dict, path: str | os.PathLike) -> None:
    """Write a tokenizer dict as UTF-8 JSON (the one place files are written)."""
    Path(path).write_text(json.dumps(d, indent=1, ensure_ascii=False), encoding="utf-8")


def read_json(path: str | os.PathLike) -> dict:
    """A tokenizer file's JSON, or a one-line error saying what is wrong with the file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScratchLMError(f"tokenizer file not found: {path}") from None
    except IsADirectoryError:
        raise ScratchLMError(f"{path} is a directory; give the tokenizer's JSON file "
                             f"(e.g. {path / 'tokenizer.json'})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScratchLMError(f"tokenizer file {path} is corrupt ({e}); retrain it or restore a copy") from None
    except RecursionError:
        raise ScratchLMError(f"tokenizer file {path} is corrupt (JSON nested too deeply)") from None
    except ValueError as e:  # e.g. a 100,000-digit number: Python refuses to convert it
        raise ScratchLMError(f"tokenizer file {path} is corrupt ({str(e).split(':')[0]})") from None
    except OSError as e:
        raise ScratchLMError(f"cannot read tokenizer file {path}: {e.strerror or e}") from None
    if not isinstance(d, dict):  # e.g. a file holding `[1, 2]`: valid JSON, but no tokenizer
        raise ScratchLMError(f"tokenizer file {path} is corrupt: its top level must be an object, "
                             f"not {type(d).__name__}")
    return d


def refuse_surrogates(text: str) -> None:
    """A lone surrogate is not a character and has no UTF-8 bytes: refuse it clearly."""
    if not text.isascii() and (m := _SURROGATE.search(text)):
        raise ScratchLMError(
            f"the text holds a lone surrogate U+{ord(m.group()):04X} at index {m.start()}, which is not a character "
            "and has no UTF-8 bytes; repair the text (e.g. decode its source with errors='replace'), "
            "or pass raw bytes to encode_bytes")


def as_ids(ids, vocab_size: int) -> list[int]:
    """`ids` as a list of Python ints, each in range, or a one-line error.

    Accepts a list, tuple, NumPy array, torch tensor or one int; NumPy integers are
    fine. A float (1.5, or even 72.0) or a bool is refused: an id is a whole number,
    and `True` meaning token 1 is a bug waiting to happen.
    """
    if hasattr(ids, "tolist"):  # tensors and arrays: one C call to Python ints
        ids = ids.tolist()
    if isinstance(ids, int) and not isinstance(ids, bool):
        return as_ids([ids], vocab_size)
    ids = list(ids)
    if set(map(type, ids)) - {int}:  # the slow check only when something is not a plain int
        ids = [_one_id(i) for i in ids]
    if ids and (min(ids) < 0 or max(ids) >= vocab_size):
        bad = next(i for i in ids if not 0 <= i < vocab_size)
        raise ScratchLMError(f"token id {bad} is outside this tokenizer's vocabulary (0..{vocab_size - 1})")
    return ids


def _one_id(i) -> int:
    if isinstance(i, bool):
        raise ScratchLMError(f"token ids must be integers, not a bool ({i!r})")
    try:
        return operator.index(i)  # int, numpy.int64, ...; never a float
    except TypeError:
        raise ScratchLMError(f"token ids must be integers, got {i!r} ({type(i).__name__})") from None


class StreamDecoder:
    """Decode ids as they are generated without printing broken characters.

    A byte-level token may end halfway through a UTF-8 character (an emoji is 4 bytes
    and can be 2 tokens). `feed` returns only complete characters and keeps the rest
    until the next call; `flush` returns whatever is left (a truly broken tail as U+FFFD).
    Works for every tokenizer, since each says which bytes an id stands for.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids) -> str:
        """Add the next id(s); return the text that is now complete (maybe "")."""
        ids = as_ids(ids, self.tokenizer.vocab_size)
        return self._utf8.decode(b"".join(map(self.tokenizer.token_bytes, ids)), final=False)

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
