"""`scratchlm tokenizer train | encode | decode | show | export | compare`.

    scratchlm tokenizer train --vocab-size 4096 --out tok.json        # built-in Shakespeare
    scratchlm tokenizer train --data my.txt --pattern gpt2 --out tok.json
    scratchlm tokenizer train --algorithm wordbpe --vocab-size 2048 --out word.json
    scratchlm tokenizer encode --tokenizer tok.json "Hello world"      # -> ids
    scratchlm tokenizer decode --tokenizer tok.json 15496 995          # -> text
    scratchlm tokenizer show --tokenizer tok.json "To be, or not to be"
    scratchlm tokenizer export --tokenizer tok.json --format tiktoken --out tok-tiktoken/

`show` paints each token with its own background colour, so you can see where
words split. Text arguments may be omitted to read standard input. `--tokenizer`
also takes a run folder (its tokenizer.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..data.shakespeare import shakespeare_text
from ..errors import ScratchLMError
from ..tokenizer import BPETokenizer, CharTokenizer, StreamDecoder, Tokenizer, WordBPETokenizer, load_tokenizer
from ..tokenizer.bpe import DisallowedSpecialTokenError
from ..tokenizer.bpe_train import read_text_file
from ..tokenizer.export import check_exportable, save_huggingface, save_tiktoken
from . import tokenizer_compare
from .common import no_extra_args

NAME = "tokenizer"
HELP = "train / encode / decode / show / export a tokenizer; compare tokenizers"
ALGORITHMS = ("bytebpe", "wordbpe", "char")

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
    p = top.add_parser(NAME, help=HELP, description="Train, use and export tokenizers.", allow_abbrev=False)
    p.set_defaults(run=run)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="learn a tokenizer from text")
    t.add_argument("--algorithm", choices=ALGORITHMS, default="bytebpe",
                   help="bytebpe: byte-level BPE (default); wordbpe: word-level BPE with </w>; "
                        "char: one id per character")
    t.add_argument("--data", type=Path, help="UTF-8 text file (default: the built-in Shakespeare corpus)")
    t.add_argument("--vocab-size", type=int, default=4096,
                   help="bytebpe: 256 bytes + merges + special tokens; wordbpe: characters + merges + ... "
                        "(default 4096)")
    t.add_argument("--pattern", default=None, help="bytebpe split pattern: gpt2, gpt4 (default) or a regex")
    t.add_argument("--special", action="append", default=None, metavar="TOKEN",
                   help="special token (repeatable; default <|endoftext|>)")
    t.add_argument("--workers", type=int, default=None, help="processes for chunk counting (default: all cores)")
    t.add_argument("--out", type=Path, default=Path("tokenizer.json"), help="output JSON file (default tokenizer.json)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    for name, help_text in (("encode", "text -> token ids"), ("show", "text with each token coloured")):
        e = sub.add_parser(name, help=help_text)
        e.add_argument("--tokenizer", "-t", type=Path, required=True, help="tokenizer JSON file or run folder")
        e.add_argument("text", nargs="?", help="text (default: read standard input)")
        e.add_argument("--allowed-special", default="",
                       help="'all' or comma-separated special tokens to recognise in the text")
        e.add_argument("--plain-special", action="store_true",
                       help="treat special-token strings as ordinary text instead of refusing them")
        if name == "show":
            e.add_argument("--ids", action="store_true", help="also print the ids")
            e.add_argument("--no-colour", action="store_true", help="mark tokens with '|' instead of colours")

    d = sub.add_parser("decode", help="token ids -> text")
    d.add_argument("--tokenizer", "-t", type=Path, required=True, help="tokenizer JSON file or run folder")
    d.add_argument("ids", nargs="*", help="ids (default: read standard input; commas or spaces)")

    x = sub.add_parser("export", help="write a byte-level BPE tokenizer for tiktoken or Hugging Face (same ids)")
    x.add_argument("--tokenizer", "-t", type=Path, required=True, help="tokenizer JSON file or run folder")
    x.add_argument("--format", choices=("tiktoken", "huggingface"), required=True,
                   help="tiktoken: tokenizer.tiktoken + tiktoken.json; "
                        "huggingface: tokenizer.json + tokenizer_config.json")
    x.add_argument("--out", type=Path, required=True, help="output folder")

    c = sub.add_parser("compare", help="compare tokenizers (ours, SentencePiece, tiktoken, word-level...) on a corpus",
                       description="Train or build each tokenizer on a training split and measure it on held-out text.")
    tokenizer_compare.add_arguments(c)
    return p


def _load(path: Path) -> Tokenizer:
    if path.is_dir() and (path / "tokenizer.json").is_file():  # a run folder
        path = path / "tokenizer.json"
    return load_tokenizer(path)


def _read_text(arg: str | None) -> str:
    return arg if arg is not None else sys.stdin.read()


def _encode(tok: Tokenizer, text: str, args) -> list[int]:
    """Encode with the command's special-token flags (only byte-level BPE reads special tokens in text)."""
    if not isinstance(tok, BPETokenizer):
        return tok.encode(text)
    allowed = args.allowed_special.strip()
    kw = {"allowed_special": "all" if allowed == "all" else {s for s in allowed.split(",") if s}}
    if args.plain_special:
        kw["disallowed_special"] = ()
    try:
        return tok.encode(text, **kw)
    except DisallowedSpecialTokenError as e:  # name this command's flags, not the Python arguments
        raise ScratchLMError(f"the text contains the special token {e.token!r}; pass --allowed-special '{e.token}' "
                             "(or all) to read it as that token, or --plain-special to encode it as text") from None


def _check_out_file(path: Path) -> None:
    """Refuse an --out that cannot be written before any training is done."""
    if path.is_dir():
        raise ScratchLMError(f"--out {path} is a directory; give a file name such as {path / 'tokenizer.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ScratchLMError(f"--out {path}: cannot create its folder ({e.strerror or e})") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ScratchLMError(f"--out {path} cannot be written (permission denied); choose another path")


def cmd_train(args) -> int:
    specials = tuple(args.special) if args.special is not None else ("<|endoftext|>",)
    if len(set(specials)) != len(specials):
        raise ScratchLMError(f"--special {next(s for s in specials if specials.count(s) > 1)!r} is given twice")
    if args.pattern is not None and args.algorithm != "bytebpe":
        raise ScratchLMError("--pattern applies to --algorithm bytebpe only (word-level BPE splits on whitespace)")
    if args.vocab_size < 1:
        raise ScratchLMError(f"--vocab-size must be positive, not {args.vocab_size}")
    _check_out_file(args.out)
    if args.data is None:
        text, source = shakespeare_text(), "built-in Shakespeare corpus"
    else:
        text, source = read_text_file(args.data), str(args.data)
    size = f"{len(text.encode('utf-8')) / 1e6:.2f} MB"
    t0 = time.perf_counter()
    if args.algorithm == "char":
        print(f"building a character tokenizer from {source} ({size}; --vocab-size does not apply)")
        tok = CharTokenizer.train(text)
        what = f"{tok.vocab_size} characters"
    elif args.algorithm == "wordbpe":
        print(f"training a {args.vocab_size}-token word-level BPE tokenizer on {source} ({size})")
        tok = WordBPETokenizer.train(text, vocab_size=args.vocab_size, special_tokens=specials)
        what = (f"vocab size {tok.vocab_size} ({len(tok.alphabet)} characters + <unk> + </w> + "
                f"{len(tok.merges)} merges + {len(tok.special_tokens)} special)")
    else:
        pattern = args.pattern or "gpt4"
        print(f"training a {args.vocab_size}-token byte-level BPE tokenizer on {source} ({size}, pattern {pattern})")
        tok = BPETokenizer.train(text, args.vocab_size, pattern=pattern, special_tokens=specials,
                                 progress=not args.no_progress, workers=args.workers)
        what = f"vocab size {tok.vocab_size} ({len(tok.merges)} merges + {len(tok.special_tokens)} special)"
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    n_tokens = sum(map(len, tok.encode_documents([text])))
    bpt = len(text.encode("utf-8")) / max(1, n_tokens)
    if isinstance(tok, BPETokenizer):
        tok.meta["bytes_per_token"] = round(bpt, 4)
    tok.save(args.out)
    print(f"{what}, trained in {seconds:.2f} s; {bpt:.2f} bytes/token on the training text "
          f"(encoded in {time.perf_counter() - t1:.2f} s); saved {args.out}")
    return 0


def cmd_encode(args) -> int:
    tok = _load(args.tokenizer)
    print(" ".join(map(str, _encode(tok, _read_text(args.text), args))))
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


def cmd_export(args) -> int:
    tok = check_exportable(_load(args.tokenizer))
    if args.out.exists() and not args.out.is_dir():
        raise ScratchLMError(f"--out {args.out} is a file; give a folder to write the {args.format} files into")
    if args.format == "tiktoken":
        folder = save_tiktoken(tok, args.out)
        print(f"wrote {folder / 'tokenizer.tiktoken'} and {folder / 'tiktoken.json'}; load with "
              "scratchlm.tokenizer.export.load_tiktoken(folder) (or tiktoken.Encoding, see tiktoken.json)")
    else:
        path = save_huggingface(tok, args.out)
        print(f"wrote {path} and {path.parent / 'tokenizer_config.json'}; load with "
              f"transformers.AutoTokenizer.from_pretrained({str(path.parent)!r})")
    return 0


def render_tokens(tok: Tokenizer, ids: list[int], colour: bool = True) -> str:
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
    ids = _encode(tok, text, args)
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
                "export": cmd_export, "compare": tokenizer_compare.run}
    return commands[args.cmd](args)
