"""`scratchlm tokenizer compare`: train many tokenizers on one corpus and measure them on held-out text.

    scratchlm tokenizer compare                                   # built-in plays, vocab 1024, 4096, 16384
    scratchlm tokenizer compare --quick                           # one size, 1M training characters
    scratchlm tokenizer compare --data my_texts/ --vocab-sizes 2048 --out runs/tok-compare

Prints a Markdown table and the unknown-words panel, and writes results.csv,
results.json, report.md and plot.png to --out. The tokenizer sub-command
`compare` is wired in `cli/tokenizer.py` through `add_arguments` and `run`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..compare.tokenizer_report import markdown_table, panel_markdown, write_all
from ..compare.tokenizers import KINDS, compare
from ..data.corpus import load_corpus
from ..errors import ScratchLMError

HELP = "train SentencePiece, tiktoken's GPT-4, word-, char- and our BPE tokenizers on one corpus; measure them"
QUICK_SIZES = "1024"
QUICK_CHARS = 1_000_000


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ScratchLMError(f"--vocab-sizes takes comma-separated integers such as 1024,4096, not {text!r}") from None
    if not sizes:
        raise ScratchLMError("--vocab-sizes needs at least one size, e.g. 1024")
    return sizes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="", help="text file, folder or glob (default: the built-in plays; "
                   "a user's files hold out the last 10%% of each)")
    p.add_argument("--vocab-sizes", default=None, help="comma-separated sizes (default 1024,4096,16384)")
    p.add_argument("--out", type=Path, default=Path("runs/tokenizer-compare"),
                   help="folder for results.csv, results.json, report.md, plot.png (default runs/tokenizer-compare)")
    p.add_argument("--tokenizers", default=None,
                   help=f"comma-separated subset of: {', '.join(KINDS)} (default: all)")
    p.add_argument("--max-train-chars", type=int, default=None,
                   help="train every tokenizer on at most this many characters (default: all the training text)")
    p.add_argument("--quick", action="store_true",
                   help=f"vocabulary size {QUICK_SIZES} and {QUICK_CHARS:,} training characters, unless given")


def command_line(args) -> str:
    """The command as typed (the options that were given), for the report to say how it was made."""
    parts = ["scratchlm tokenizer compare"]
    for flag, value in (("--data", args.data), ("--vocab-sizes", args.vocab_sizes), ("--tokenizers", args.tokenizers),
                        ("--max-train-chars", args.max_train_chars)):
        if value:
            parts.append(f"{flag} {value}")
    if args.quick:
        parts.append("--quick")
    parts.append(f"--out {args.out}")
    return " ".join(parts)


def run(args) -> int:
    sizes = _sizes(args.vocab_sizes or (QUICK_SIZES if args.quick else "1024,4096,16384"))
    max_chars = args.max_train_chars if args.max_train_chars is not None else (QUICK_CHARS if args.quick else None)
    if max_chars is not None and max_chars < 1000:
        raise ScratchLMError(f"--max-train-chars {max_chars} is too small to train a tokenizer; try 100000")
    kinds = [k.strip() for k in args.tokenizers.split(",") if k.strip()] if args.tokenizers else None
    corpus = load_corpus(args.data)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", file=sys.stderr, flush=True)

    comp = compare(corpus.train, "\n".join(corpus.val), sizes, kinds=kinds, max_train_chars=max_chars, say=say,
                   source=corpus.name)
    paths = write_all(comp, args.out, command=command_line(args))
    print(markdown_table(comp))
    for note in comp.notes:
        print(f"note: {note}")
    if comp.panel:
        print("\n## Unknown words\n")
        print(panel_markdown(comp))
    written = ", ".join(str(p) for p in paths.values())
    print(f"\n{len(comp.rows)} rows in {time.perf_counter() - t0:.0f} s; wrote {written}")
    return 0
