"""The split patterns: how text is cut into chunks before BPE ever sees it.

BPE merges never cross a chunk boundary. Splitting first keeps a word and the
punctuation after it apart ("dog." and "dog!" share the token " dog"), keeps
letters apart from digits, and bounds how long a token can get.

Two patterns are built in, written for the `regex` package (it knows `\\p{L}`,
"any letter in any script", and possessive quantifiers such as `?+`):

* GPT-2: a leading space sticks to the next word (" world"), the English
  contractions are their own chunks ("'s", "'ll"), numbers of any length are one
  chunk.
* GPT-4 (cl100k_base, the default): contractions are case-insensitive, digits
  come in groups of at most three (so "2024" is "202" + "4" and a vocabulary does
  not waste slots on every year), any single non-letter may lead a word
  ("(word", "_name"), and punctuation runs swallow the newlines after them.

These are the same strings tiktoken and Hugging Face use, so an export of our
tokenizer splits text exactly as we do.
"""

from __future__ import annotations

import re

import regex

from ..errors import ScratchLMError

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}

# The same two patterns for pure-ASCII text, in Python's own `re` (about twice as fast
# as `regex` here). Restricted to ASCII, \p{L} is [A-Za-z], \p{N} is [0-9], and
# `re.ASCII` makes \s exactly `regex`'s \s ([ \t\n\v\f\r]). The possessive `?+` and
# `++` become plain `?` and `+`: there, backtracking could never find another match
# (the optional character is not a letter; the punctuation run cannot contain [\r\n]),
# and `re` only learned possessives in Python 3.11. tests/test_tokenizer_bpe.py checks
# that both split every ASCII string alike.
ASCII_PATTERNS = {
    GPT2_PATTERN: r"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""",
    GPT4_PATTERN: r"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]{1,3}| ?[^\sA-Za-z0-9]+[\r\n]*"""
                  r"""|\s*[\r\n]|\s+(?!\S)|\s+""",
}


class Splitter:
    """`split(text) -> chunks` for a pattern: `regex`'s findall, or for a built-in pattern
    the equivalent `re` pattern on the ASCII parts of the text (same chunks, faster)."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        compiled = regex.compile(pattern)
        self._finditer = compiled.finditer
        # findall returns whole matches only for a pattern without capture groups
        self._full = compiled.findall if compiled.groups == 0 else self._with_gaps
        ascii_text = ASCII_PATTERNS.get(pattern)
        self._fast = re.compile(ascii_text, re.ASCII).findall if ascii_text else None

    def __call__(self, text: str) -> list[str]:
        if self._fast is None:  # a custom pattern: it may skip characters, which stay as chunks
            chunks = self._full(text)
            return chunks if sum(map(len, chunks)) == len(text) else self._with_gaps(text)
        if text.isascii():
            return self._fast(text)
        if len(text) < 2 * ASCII_PIECE:
            return self._full(text)
        # Mostly-ASCII text (code with one "é" in a comment): cut it at safe places (see
        # below) and give each ASCII piece to the fast pattern.
        out: list[str] = []
        for piece in split_for_workers(text, self.pattern, len(text) // ASCII_PIECE):
            out += self._fast(piece) if piece.isascii() else self._full(piece)
        return out

    def _with_gaps(self, text: str) -> list[str]:
        """The matches, and the text between them as chunks of its own: nothing is lost."""
        out, pos = [], 0
        for m in self._finditer(text):
            start, end = m.span()
            if start > pos:
                out.append(text[pos:start])
            if end > start:
                out.append(m.group())
            pos = max(pos, end)
        if pos < len(text):
            out.append(text[pos:])
        return out

    def __reduce__(self):  # pickles as its pattern
        return Splitter, (self.pattern,)


ASCII_PIECE = 4096  # characters per piece when a text is not all ASCII


def resolve_pattern(pattern: str) -> str:
    """'gpt2' / 'gpt4' -> the built-in regex; anything else is taken as a regex itself.

    A custom pattern need not match every character (what it skips becomes chunks of
    its own), but it must not match the empty string: an empty chunk would make the
    exports lose the character after it.
    """
    text = PATTERNS.get(pattern, pattern)
    if not isinstance(text, str) or not text:
        raise ScratchLMError("the split pattern must be 'gpt2', 'gpt4' or a non-empty regex")
    try:
        compiled = regex.compile(text)
    except regex.error as e:
        raise ScratchLMError(f"the split pattern {pattern!r} is not a valid regex: {e}") from None
    if compiled.search("") is not None or compiled.search("a") and not compiled.search("a").group():
        raise ScratchLMError(f"the split pattern {pattern!r} matches the empty string; make every alternative "
                             "match at least one character (e.g. \\p{L}+ rather than \\p{L}*)")
    return text


def pattern_name(pattern: str) -> str | None:
    """The built-in name of a pattern string, or None for a custom pattern."""
    for name, text in PATTERNS.items():
        if text == pattern:
            return name
    return None


# For counting chunks in parallel we cut one long text into pieces. A cut is only
# allowed where every built-in pattern is guaranteed to end a chunk: right after a
# single newline that sits between a non-space and a letter ("...speak.\nALL").
# No alternative of either pattern matches a newline and then a letter, the newline
# cannot join a whitespace run (the character before it is not a space), and the
# look-ahead `\s+(?!\S)` sees the same thing at the end of a piece as before the
# letter. So each piece splits exactly as it would inside the whole text. Custom
# patterns give no such guarantee and are counted in one piece.
_SAFE_CUT = regex.compile(r"(?<=\S)\n(?=\p{L})")


def split_for_workers(text: str, pattern: str, pieces: int) -> list[str]:
    """Cut `text` into about `pieces` parts whose chunks are those of the whole text."""
    if pieces <= 1 or pattern_name(pattern) is None:
        return [text]
    out, start, step = [], 0, max(1, len(text) // pieces)
    while start < len(text):
        target = start + step
        if target >= len(text):
            out.append(text[start:])
            break
        m = _SAFE_CUT.search(text, target)
        if m is None:
            out.append(text[start:])
            break
        out.append(text[start : m.end()])
        start = m.end()
    return out
