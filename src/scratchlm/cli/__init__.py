"""The `scratchlm` command: one module per sub-command, argument parsing and printing only.

Each module in `COMMANDS` has `add_parser(sub)` (registers its parser and sets
`run`) and `run(args, rest) -> int`; the work itself is done by library functions
that return values and raise `ScratchLMError` for a user's mistake. Here such an error
prints one line and exits with status 2 (`--debug` shows the traceback instead); so
does a full disk (or quota) anywhere: checkpoints are written atomically, so the last
one survives.
"""

from __future__ import annotations

import argparse
import errno
import sys

from ..errors import ScratchLMError
from .common import split_overrides
from . import (
    ablate,
    chat,
    data,
    doctor,
    export,
    finetune,
    import_hf,
    memory,
    report,
    sample,
    sweep,
    tokenizer,
    train,
    viz,
)
from . import eval as eval_cmd  # `eval` would hide the builtin here

# In the order `scratchlm --help` lists them: the main path, then looking inside, then tools.
COMMANDS = [
    train,
    sample,
    tokenizer,
    viz,
    report,
    finetune,
    chat,
    eval_cmd,
    data,
    ablate,
    memory,
    doctor,
    sweep,
    export,
    import_hf,
]


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (also used by the test that checks the docs' command lines)."""
    parser = argparse.ArgumentParser(
        prog="scratchlm",
        allow_abbrev=False,
        description="A GPT built from scratch: tokenizer, model, training, sampling.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if rest:  # left over: only `--section.key value` overrides may be; a typo gets "did you mean"
            command = next(a for a in parser._actions if a.dest == "command").choices[args.command]
            split_overrides(rest, [o for a in command._actions for o in a.option_strings])
        return args.run(args, rest)
    except ScratchLMError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if debug or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {e.filename}" if e.filename else ""
        print(
            f"error: disk full{where} ({e.strerror}); free some space and run again "
            "(a training run continues from its last checkpoint with: scratchlm train --resume RUN_DIR)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
