"""`scratchlm sample`: generate text from a run folder or checkpoint, streamed as it is generated."""

from __future__ import annotations

import argparse
import sys

from ..inference import load_run, sample_text
from .common import add_sample_args, no_extra_args

NAME = "sample"
HELP = "generate text from a run folder or checkpoint"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False)
    p.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    add_sample_args(p)
    p.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    no_extra_args(rest)
    r = load_run(args.path)
    sc = r.config.sample
    for key in ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "num_samples", "dtype"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(sc, key, value)
    sample_text(r.model, r.tokenizer, sc, out=sys.stdout)
    return 0
