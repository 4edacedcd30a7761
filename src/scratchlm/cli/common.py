"""Helpers the command modules share: config overrides on the command line, sampling flags."""

from __future__ import annotations

import argparse
import difflib
import time
from pathlib import Path

from ..config import build_config
from ..errors import ScratchLMError


def split_overrides(rest: list[str], known: list[str] = ()) -> list[str]:
    """['--train.lr', '1e-3', '--model.n_layer=8'] -> ['train.lr=1e-3', 'model.n_layer=8'].

    Anything else left over after argparse is a mistake: refuse it with a hint (the closest of
    the command's own flags, `known`, when one is close).
    """
    out, i = [], 0
    while i < len(rest):
        arg = rest[i]
        key = arg.split("=")[0]
        if not arg.startswith("--") or "." not in key:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]}?" if close else "config keys look like --train.lr 1e-3"
            raise ScratchLMError(f"unrecognised argument {arg!r}; {hint}")
        if "=" in arg:
            out.append(arg[2:])
            i += 1
        else:
            if i + 1 >= len(rest):
                raise ScratchLMError(f"{arg} needs a value")
            out.append(f"{arg[2:]}={rest[i + 1]}")
            i += 2
    return out


def no_extra_args(rest: list[str]) -> None:
    """Commands without config overrides refuse anything argparse did not recognise."""
    if rest:
        raise ScratchLMError(f"unrecognised arguments: {' '.join(rest)}")


def add_config_args(p: argparse.ArgumentParser) -> None:
    """--preset / --config / --data: how a training-like command chooses its configuration."""
    p.add_argument("--preset", help="a preset from configs/ (default: 'default')")
    p.add_argument("--config", help="a TOML config file (instead of a preset)")
    p.add_argument("--data", help="text file, folder or glob (default: the built-in Shakespeare plays)")


def config_from_args(args, overrides: list[str], what: str) -> tuple:
    """(config, default output folder) from --preset/--config/--data and `overrides`;
    the folder is runs/<what>-<preset>-<time> (runs/<preset>-<time> when `what` is empty)."""
    if args.data is not None:
        overrides = [*overrides, f"data.path={args.data}"]
    preset = args.preset or (None if args.config else "default")
    cfg = build_config(preset, args.config, overrides)
    name = "-".join(x for x in (what, preset or Path(args.config).stem, time.strftime("%Y%m%d-%H%M%S")) if x)
    return cfg, f"runs/{name}"


def add_sample_args(p: argparse.ArgumentParser) -> None:
    """The sampling flags `sample` (and later `chat`) share; each overrides the run's [sample] section."""
    p.add_argument("--prompt", help="text to continue (default: a new line)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-samples", type=int)
    p.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16"],
        help="weights while decoding: fp32 (exact) or 16-bit (half the memory traffic, faster on larger models)",
    )
