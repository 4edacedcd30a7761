"""The `scratchlm` command: train, sample, tokenizer (and the tools of later issues).

User errors (`ScratchLMError`) print one line and exit with status 2; `--debug`
shows the traceback instead. So does a full disk (or quota) anywhere, e.g. while
appending to metrics.jsonl: checkpoints are written atomically, so the last one survives.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import sys
import time
from pathlib import Path

from .errors import ScratchLMError


def _split_overrides(rest: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """['--train.lr', '1e-3', '--model.n_layer=8'] -> ['train.lr=1e-3', 'model.n_layer=8']."""
    out, i = [], 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            known = [a for act in parser._actions for a in act.option_strings]
            close = difflib.get_close_matches(arg.split("=")[0], known, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; config keys look like --train.lr 1e-3"
            raise ScratchLMError(f"unrecognised argument {arg!r}{hint}")
        if "=" in arg:
            out.append(arg[2:])
            i += 1
        else:
            if i + 1 >= len(rest):
                raise ScratchLMError(f"{arg} needs a value")
            out.append(f"{arg[2:]}={rest[i + 1]}")
            i += 2
    return out


def _train_parser(sub):
    p = sub.add_parser("train", allow_abbrev=False, help="train a model (no arguments: the built-in Shakespeare corpus)",
                       description="Train a GPT. Any config key can be set as --SECTION.KEY VALUE, e.g. --model.n_layer 8 --train.lr 1e-3.")
    p.add_argument("--preset", help="a preset from configs/ (default: 'default')")
    p.add_argument("--config", help="a TOML config file (instead of a preset)")
    p.add_argument("--data", help="text file, folder or glob (default: the built-in Shakespeare plays)")
    p.add_argument("--out", help="run folder (default: runs/<preset>-<time>)")
    p.add_argument("--max-steps", type=int, help="same as --train.max_steps")
    p.add_argument("--max-time", type=float, help="seconds of training; same as --train.max_time")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last good checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace what --out already holds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-doctor", action="store_true", help="no live diagnostics (see `scratchlm doctor`)")
    return p


def _sample_args(p):
    p.add_argument("--prompt", help="text to continue (default: a new line)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-samples", type=int)
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"],
                   help="weights while decoding: fp32 (exact) or 16-bit (half the memory traffic, faster on larger models)")


def cmd_train(args, rest, parser) -> int:
    from .config import build_config
    from .train import run_training
    from .train.events import Events

    overrides = _split_overrides(rest, parser)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_time is not None:
        overrides.append(f"train.max_time={args.max_time}")
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    if args.resume:
        if args.preset or args.config:
            raise ScratchLMError("--resume takes the run's own config; drop --preset/--config")
        saved = Path(args.resume) / "config.json"
        if not saved.exists():
            raise ScratchLMError(f"nothing to resume in {args.resume} (no config.json)")
        cfg = build_config(base=json.loads(saved.read_text()), overrides=overrides)
        out = args.resume
    else:
        preset = args.preset or (None if args.config else "default")
        cfg = build_config(preset, args.config, overrides)
        out = args.out or f"runs/{preset or Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    events = Events()
    if not args.no_doctor:  # the doctor's live detectors: an extra the training core never imports
        from .doctor.live import attach

        attach(events, quiet=args.quiet)
    run_training(cfg, out, resume=bool(args.resume), overwrite=args.overwrite, quiet=args.quiet, events=events)
    return 0


# Subcommands that parse their own arguments: name -> (module with main(argv) -> int, help)
DELEGATED = {
    "tokenizer": ("scratchlm.tokenizer.cli", "train / encode / decode / show a byte-level BPE tokenizer"),
    "memory": ("scratchlm.train.memory", "estimate and measure training memory and speed for a config"),
    "doctor": ("scratchlm.doctor.cli", "diagnose a run folder: the troubleshooting table, with evidence"),
    "sweep": ("scratchlm.sweep", "learning-rate range test and grid sweep"),
}


def run_delegated(name: str, argv: list[str]) -> int:
    import importlib

    try:
        module = importlib.import_module(DELEGATED[name][0])
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("scratchlm"):
            raise ScratchLMError(f"'scratchlm {name}' is not available in this version") from None
        raise
    return module.main(argv)


def cmd_sample(args) -> int:
    from .sample import sample_cli

    return sample_cli(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = argparse.ArgumentParser(prog="scratchlm", allow_abbrev=False, description="A GPT built from scratch: tokenizer, model, training, sampling.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train_p = _train_parser(sub)
    sp = sub.add_parser("sample", allow_abbrev=False, help="generate text from a run folder or checkpoint")
    sp.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    _sample_args(sp)
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    try:
        if argv[:1] and argv[0] in DELEGATED:
            return run_delegated(argv[0], argv[1:])
        args, rest = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "train":
            return cmd_train(args, rest, train_p)
        if rest:
            parser.error(f"unrecognised arguments: {' '.join(rest)}")
        if args.command == "sample":
            return cmd_sample(args)
        parser.error(f"unknown command {args.command}")
    except ScratchLMError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if debug or e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {e.filename}" if e.filename else ""
        print(f"error: disk full{where} ({e.strerror}); free some space and run again "
              "(a training run continues from its last checkpoint with: scratchlm train --resume RUN_DIR)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
