"""`scratchlm import hf`: turn a local Hugging Face GPT-2 (or Llama) checkpoint folder into a run folder."""

from __future__ import annotations

import argparse
import sys

from ..interop.hf import import_hf
from .common import split_overrides

NAME = "import"
HELP = "make a run folder from a local Hugging Face checkpoint folder (GPT-2 format)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False, description=HELP)
    kinds = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    hf = kinds.add_parser("hf", allow_abbrev=False, help="a folder with config.json, model.safetensors or "
                          "pytorch_model.bin, and tokenizer.json or vocab.json + merges.txt (nothing is downloaded)")
    hf.add_argument("folder", metavar="DIR")
    hf.add_argument("--out", required=True, help="the run folder to write")
    hf.add_argument("--data", help="the text to keep training on (a later `train --resume` uses it)")
    hf.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    hf.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    overrides = split_overrides(rest)  # --train.lr 3e-4 ...: the run's training settings
    if args.data is not None:
        overrides.append(f"data.path={args.data}")
    out = import_hf(args.folder, args.out, overrides=overrides, overwrite=args.overwrite,
                    say=lambda m: print(m, file=sys.stderr))
    print(f"wrote {out}")
    print(f"  scratchlm sample {out}")
    print(f"  scratchlm train --resume {out}   # keep training it (on --data, with the --train.* settings given here)")
    return 0
