"""The built-in question task: reading questions generated from the plays, no download needed.

Each question shows a short passage of a play and asks about it; the answer is a name or a
line copied from the passage, so it can be checked by exact match:

    HORATIO:                                  kind "first":   Who speaks first?            → HORATIO
    Friends to this ground.                   kind "speaker": Who speaks the line
                                                              "And liegemen to the Dane."?  → MARCELLUS
    MARCELLUS:                                kind "next":    Which line does FRANCISCO say
    And liegemen to the Dane.                                 after "And liegemen to the
                                                              Dane."?                       → Give you good night.
    FRANCISCO:
    Give you good night.

Training questions come from the training plays, evaluation questions from the three held-out
plays (Hamlet, Twelfth Night, Henry V), whose names and lines the model has never seen: it has
to read them, not remember them. Generation is deterministic: passages start at fixed speeches,
and the random choices (which line, which kind) come from a generator seeded by the play and
the passage's start. Passages are kept short (`max_chars`) so that passage, question and answer
fit the main job's context of 128 tokens.

The training passages' speakers are renamed (`rename`, the default; `scratchlm data questions
--own-names` keeps them), consistently within a passage, to names drawn at random: half from
the other plays' casts, half invented (KORVELA, SIR ANDLO). With their own names a fine-tuned
model partly answers from the casts it knows: it learns to name the passage's likeliest
speaker (HAMLET when Horatio speaks first). Random names take that away, so only the passage
can tell (89.2% against 75.6% on "who speaks first" about the held-out plays after 10 minutes).
The names must also spell with every token a real name can use, since the model only learns
to copy the tokens it is asked to write (`NamePool`): two thirds of the invented names are a
word of the plays' speeches or of their speakers' names (ANDLO, CLOWNPE), the cast is drawn
as often as each speaker speaks (CLOWN, not once among 966 names), and in one passage in seven
every speaker gets the same title (SIR TOBY BELCH and SIR ANDREW; docs/finetuning.md).

The training file also asks a fourth kind, "Which line does NAME say first?" (`opening`): half
of "next" (find NAME's speech, copy its line). The held-out file asks the issue's three kinds.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..data.shakespeare import load_plays, split_plays
from ..errors import ScratchLMError

KINDS = ("first", "speaker", "next")  # the three kinds: training and evaluation
# training only: "Which line does NAME say first?", a step towards "next" (find NAME's speech, copy its line)
TRAIN_KINDS = (*KINDS, "opening")
MAX_CHARS = 200  # passage length in characters (~70 tokens of the main job's tokenizer)
MAX_LINE = 50  # a quoted or answered line is at most this long


def speeches(play: str) -> list[tuple[str, list[str]]]:
    """[(SPEAKER, [lines])] from a play in the `SPEAKER:\\nspeech` format."""
    out = []
    for block in play.strip().split("\n\n"):
        head, _, body = block.partition("\n")
        lines = [line for line in body.split("\n") if line.strip()]
        if head.endswith(":") and lines:
            out.append((head[:-1], lines))
    return out


def passage_at(sp: list[tuple[str, list[str]]], start: int, max_chars: int = MAX_CHARS) -> list[tuple[str, str]]:
    """[(speaker, line)] for the lines of speeches from `start` on, as many as fit in max_chars
    (whole lines; the last speech may be cut after a line)."""
    out, used = [], 0
    for speaker, lines in sp[start:]:
        head = len(speaker) + 3  # "NAME:\n" and the blank line before it
        for j, line in enumerate(lines):
            cost = len(line) + 1 + (head if j == 0 else 0)
            if used + cost > max_chars:
                return out
            out.append((speaker, line))
            used += cost
    return out


def passage_text(lines: list[tuple[str, str]]) -> str:
    """The passage in the plays' own format: NAME:, its lines, a blank line before the next name."""
    parts, last = [], None
    for speaker, line in lines:
        if speaker != last:
            parts.append(("\n" if parts else "") + f"{speaker}:")
            last = speaker
        parts.append(line)
    return "\n".join(parts)


SYLLABLES = [c + v for c in "BCDFGLMNPRSTV" for v in "AEIOU"] + ["AN", "EL", "OR", "US", "IO", "ETH"]
TITLES = ("SIR", "LADY", "LORD", "KING", "QUEEN", "FIRST", "SECOND", "DUKE")
SHARED_TITLE = 0.15  # the share of passages whose speakers all get one title, as SIR TOBY BELCH and SIR ANDREW


@dataclass(frozen=True)
class NamePool:
    """What the training passages' new names are drawn from (`name_pool`)."""
    cast: list[str]  # the training plays' speakers, each as often as it speaks
    words: list[str]  # the words of their speeches, uppercased, each as often as it occurs
    name_words: list[str]  # the words their names are made of, once each: CLOWN, FIRST, ANTONIO


def play_words(plays: list[str]) -> list[str]:
    """Every word of the plays' speeches (not their speaker names), uppercased, as often as it occurs."""
    return [w.upper() for play in plays for _, lines in speeches(play) for line in lines
            for w in re.findall(r"[A-Za-z]{2,}", line)]


def name_pool(plays: list[str]) -> NamePool:
    """The names, speech words and name words of `plays` (the training plays)."""
    cast = [s for play in plays for s, _ in speeches(play)]
    return NamePool(cast, play_words(plays), sorted({w for s in cast for w in s.split() if w.isalpha()}))


def invented_word(rng: random.Random, pool: NamePool | None = None) -> str:
    """Two to four syllables, or (with a `pool`) a word of the plays' speeches or of their speakers'
    names, uppercased, with a syllable or none after it: AND → ANDLO, CLOWN → CLOWNPE. The words make
    names spell with the tokens the plays use (" AND" in SIR ANDREW, CLOWN), which names made of
    syllables alone would never ask the model to write."""
    r = rng.random()
    if pool and r < 2 / 3:
        return rng.choice(pool.words if r < 1 / 3 else pool.name_words) + rng.choice(["", *SYLLABLES])
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def invented_name(rng: random.Random, pool: NamePool | None = None) -> str:
    """A name no play has: one invented word, sometimes after a title or before a second word."""
    name, r = invented_word(rng, pool), rng.random()
    if r < 0.25:
        return f"{rng.choice(TITLES)} {name}"
    return f"{name} {invented_word(rng, pool)}" if r < 0.35 else name


def renamed(lines: list[tuple[str, str]], pool: NamePool, rng: random.Random) -> list[tuple[str, str]]:
    """The passage with each speaker renamed, the same way throughout: half the time to a speaker of
    the pool's cast (one who speaks more is drawn more often, as in the plays), otherwise to an
    invented name; no two speakers share a name. In SHARED_TITLE of the passages every name gets
    the same title in front, so the first words of two names cannot tell them apart."""
    new: dict[str, str] = {}
    title = rng.choice(TITLES) if rng.random() < SHARED_TITLE else None
    for speaker, _ in lines:
        while speaker not in new:
            name = rng.choice(pool.cast) if rng.random() < 0.5 else invented_name(rng, pool)
            if title and not name.startswith(title + " "):
                name = f"{title} {name}"
            if name not in new.values():
                new[speaker] = name
    return [(new[s], t) for s, t in lines]


def make_question(lines: list[tuple[str, str]], kind: str, rng: random.Random) -> tuple[str, str] | None:
    """(question, answer) of one kind about a passage, or None if the passage has no good one."""
    if kind == "first":
        return "Who speaks first?", lines[0][0]
    texts = [t for _, t in lines]
    unique = [i for i, t in enumerate(texts) if texts.count(t) == 1 and len(t) <= MAX_LINE]
    if kind == "speaker":
        # a line not by the first speaker when there is one, so "the first name" is not the answer
        others = [i for i in unique if lines[i][0] != lines[0][0]]
        choices = others or unique
        if not choices:
            return None
        i = rng.choice(choices)
        return f'Who speaks the line "{texts[i]}"?', lines[i][0]
    if kind == "opening":
        starts = {}  # each speaker's first line
        for i, (speaker, _) in enumerate(lines):
            starts.setdefault(speaker, i)
        choices = [i for i in starts.values() if i in unique]
        if not choices:
            return None
        i = rng.choice(choices)
        return f"Which line does {lines[i][0]} say first?", texts[i]
    if kind == "next":
        choices = [i for i in unique if i + 1 < len(lines) and len(texts[i + 1]) <= MAX_LINE]
        if not choices:
            return None
        i = rng.choice(choices)
        return f'Which line does {lines[i + 1][0]} say after "{texts[i]}"?', texts[i + 1]
    raise ScratchLMError(f"unknown question kind {kind!r} (kinds: {', '.join(TRAIN_KINDS)})")


def play_questions(name: str, play: str, every: int = 1, max_chars: int = MAX_CHARS,
                   names: NamePool | None = None, kinds: tuple[str, ...] = KINDS) -> list[dict]:
    """Questions about passages starting at every `every`-th speech of one play; the kind
    rotates from one passage to the next (a kind with no good question there is skipped).
    With `names`, the speakers of each passage are renamed to names drawn from it (`renamed`)."""
    sp = speeches(play)
    out = []
    for n, start in enumerate(range(0, len(sp), every)):
        lines = passage_at(sp, start, max_chars)
        if len({s for s, _ in lines}) < 2 or len(lines) < 3:
            continue  # one speaker, or too little text to ask about
        kind = kinds[n % len(kinds)]
        rng = random.Random(f"{name}:{start}")  # a str seed is hashed the same way on every run
        if names:
            lines = renamed(lines, names, rng)
        qa = make_question(lines, kind, rng)
        if qa is None:
            continue
        question, answer = qa
        out.append({"messages": [{"role": "user", "content": f"{passage_text(lines)}\n\n{question}"},
                                 {"role": "assistant", "content": answer}],
                    "kind": kind, "play": name, "speech": start})
    return out


def build_questions(train_every: int = 1, eval_every: int = 4, max_chars: int = MAX_CHARS,
                    plays: dict[str, str] | None = None, rename: bool = True) -> dict[str, list[dict]]:
    """{'train': questions from the training plays, 'eval': from the held-out plays}. With `rename`
    (the default) the training passages' speakers get random names (see the module's docstring);
    the held-out plays keep their own."""
    plays = plays if plays is not None else load_plays()
    train_names, eval_names = split_plays(plays)
    names = name_pool([plays[n] for n in train_names]) if rename else None
    return {
        "train": [q for n in train_names
                  for q in play_questions(n, plays[n], train_every, max_chars, names, TRAIN_KINDS)],
        "eval": [q for n in eval_names for q in play_questions(n, plays[n], eval_every, max_chars)],
    }


def write_questions(out_dir: str | Path, **kwargs) -> dict[str, Path]:
    """Write train.jsonl and eval.jsonl (one conversation per line, plus its kind and source)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in build_questions(**kwargs).items():
        path = out_dir / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        paths[split] = path
    return paths


def counts(rows: list[dict]) -> dict[str, int]:
    return {k: sum(r.get("kind") == k for r in rows) for k in TRAIN_KINDS}
