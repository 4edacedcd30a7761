"""`scratchlm tokenizer train | encode | decode | show`.

    scratchlm tokenizer train --vocab-size 4096 --out tok.json        # built-in Shakespeare
    scratchlm tokenizer train --data my.txt --pattern gpt2 --out tok.json
    scratchlm tokenizer encode --tokenizer tok.json "Hello world"      # -> ids
    scratchlm tokenizer decode --tokenizer tok.json 15496 995          # -> text
    scratchlm tokenizer show --tokenizer tok.json "To be, or not to be"

`show` paints each token with its own background colour, so you can see where
words split. Text arguments may be omitted to read standard input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..data.shakespeare import shakespeare_text
from ..errors import ScratchLMError
from ..tokenizer.bpe import BPETokenizer, StreamDecoder, read_text_file
from . import tokenizer_compare
from .common import no_extra_args

NAME = "tokenizer"
HELP = "train / encode / decode / show a byte-level BPE tokenizer"

# Background colours that keep black text readable, cycled token by token.
_COLOURS = [
    "\x1b[30;48;5;153m",  # light blue
    "\x1b[30;48;5;222m",  # light orange
    "\x1b[30;48;5;157m",  # light green
    "\x1b[30;48;5;217m",  # pink
    "\x1b[30;48;5;229m",  # pale yellow
    "\x1b[30;48;5;183m",  # lilac
]
_SPECIAL = "\x1b[97;48;5;160m"  # white on red: special tokens stand out
_RESET = "\x1b[0m"


def add_parser(top) -> argparse.ArgumentParser:
    p = top.add_parser(NAME, help=HELP, description="Train and use a byte-level BPE tokenizer.", allow_abbrev=False)
    p.set_defaults(run=run)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="learn a tokenizer from text")
    t.add_argument("--data", type=Path, help="UTF-8 text file (default: the built-in Shakespeare corpus)")
    t.add_argument("--vocab-size", type=int, default=4096, help="256 bytes + merges + special tokens (default 4096)")
    t.add_argument("--pattern", default="gpt4", help="split pattern: gpt2, gpt4 (default) or a regex")
    t.add_argument("--special", action="append", default=None, metavar="TOKEN", help="special token (repeatable; default <|endoftext|>)")
    t.add_argument("--workers", type=int, default=None, help="processes for chunk counting (default: all cores)")
    t.add_argument("--out", type=Path, default=Path("tokenizer.json"), help="output JSON file (default tokenizer.json)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    for name, help_text in (("encode", "text -> token ids"), ("show", "text with each token coloured")):
        e = sub.add_parser(name, help=help_text)
        e.add_argument("--tokenizer", "-t", type=Path, required=True, help="tokenizer JSON file")
        e.add_argument("text", nargs="?", help="text (default: read standard input)")
        e.add_argument("--allowed-special", default="", help="'all' or comma-separated special tokens to recognise in the text")
        e.add_argument("--plain-special", action="store_true", help="treat special-token strings as ordinary text instead of refusing them")
        if name == "show":
            e.add_argument("--ids", action="store_true", help="also print the ids")
            e.add_argument("--no-colour", action="store_true", help="mark tokens with '|' instead of colours")

    d = sub.add_parser("decode", help="token ids -> text")
    d.add_argument("--tokenizer", "-t", type=Path, required=True, help="tokenizer JSON file")
    d.add_argument("ids", nargs="*", help="ids (default: read standard input; commas or spaces)")

    c = sub.add_parser("compare", help="compare tokenizers (ours, SentencePiece, tiktoken, word-level...) on a corpus",
                       description="Train or build each tokenizer on a training split and measure it on held-out text.")
    tokenizer_compare.add_arguments(c)
    return p


def _load(path: Path):
    return BPETokenizer.load(path)


def _read_text(arg: str | None) -> str:
    return arg if arg is not None else sys.stdin.read()


def _encode_args(args) -> dict:
    allowed = args.allowed_special.strip()
    allowed_special = "all" if allowed == "all" else {s for s in allowed.split(",") if s}
    kw = {"allowed_special": allowed_special}
    if args.plain_special:
        kw["disallowed_special"] = ()
    return kw


def cmd_train(args) -> int:
    if args.data is None:
        text, source = shakespeare_text(), "built-in Shakespeare corpus"
    else:
        text = read_text_file(args.data)
        source = str(args.data)
    specials = tuple(args.special) if args.special is not None else ("<|endoftext|>",)
    print(f"training a {args.vocab_size}-token BPE tokenizer on {source} ({len(text.encode('utf-8')) / 1e6:.2f} MB, pattern {args.pattern})")
    tok = BPETokenizer.train(
        text, args.vocab_size, pattern=args.pattern, special_tokens=specials, progress=not args.no_progress, workers=args.workers
    )
    t0 = time.perf_counter()
    n_tokens = len(tok.encode_ordinary(text))
    bpt = len(text.encode("utf-8")) / max(1, n_tokens)
    tok.meta["bytes_per_token"] = round(bpt, 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(args.out)
    print(
        f"vocab size {tok.vocab_size} ({len(tok.merges)} merges + {len(tok.special_tokens)} special), "
        f"trained in {tok.meta['training_seconds']:.2f} s; {bpt:.2f} bytes/token on the training text "
        f"(encoded in {time.perf_counter() - t0:.2f} s); saved {args.out}"
    )
    return 0


def cmd_encode(args) -> int:
    tok = _load(args.tokenizer)
    ids = tok.encode(_read_text(args.text), **_encode_args(args))
    print(" ".join(map(str, ids)))
    return 0


def cmd_decode(args) -> int:
    tok = _load(args.tokenizer)
    raw = args.ids if args.ids else sys.stdin.read().replace(",", " ").split()
    try:
        ids = [int(x) for item in raw for x in item.replace(",", " ").split()]
    except ValueError:
        raise ScratchLMError("decode takes integer token ids") from None
    sys.stdout.write(tok.decode(ids) + ("\n" if args.ids else ""))
    return 0


def render_tokens(tok, ids: list[int], colour: bool = True) -> str:
    """Each token's text on its own background colour ('|'-separated without colour).

    A token may hold only part of a character; those bytes are shown once the
    character is complete, on the colour of the token that completes it.
    """
    parts, dec, k = [], StreamDecoder(tok), 0
    specials = set(tok.special_tokens.values())
    for i in ids:
        piece = dec.feed([i])
        if not piece:
            continue
        # make invisible characters visible, but keep the line breaks
        shown = piece.replace("\t", "→\t").replace("\r", "␍").replace("\n", "↵\n")
        if not colour:
            parts.append(shown)
            continue
        style = _SPECIAL if i in specials else _COLOURS[k % len(_COLOURS)]
        k += 1
        # reset before each newline so the colour does not run to the edge of the terminal
        parts.append("\n".join(style + line + _RESET if line else line for line in shown.split("\n")))
    tail = dec.flush()
    if tail:
        parts.append(tail)
    return ("" if colour else "|").join(parts)


def cmd_show(args) -> int:
    tok = _load(args.tokenizer)
    text = _read_text(args.text)
    ids = tok.encode(text, **_encode_args(args))
    colour = not args.no_colour
    print(render_tokens(tok, ids, colour=colour))
    n_bytes = len(text.encode("utf-8"))
    print(f"{len(ids)} tokens, {n_bytes} bytes, {n_bytes / max(1, len(ids)):.2f} bytes/token")
    if args.ids:
        print(" ".join(map(str, ids)))
    return 0


def run(args, rest: list[str]) -> int:
    no_extra_args(rest)
    commands = {"train": cmd_train, "encode": cmd_encode, "decode": cmd_decode, "show": cmd_show,
                "compare": tokenizer_compare.run}
    return commands[args.cmd](args)
