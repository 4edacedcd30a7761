"""`scratchlm ablate`: train a baseline and one run per architecture change, each for the same time, and compare.

    scratchlm ablate --preset tiny --budget 30 --change norm=rmsnorm --change mlp=swiglu --change position=rope
    scratchlm ablate --preset guide --budget 60 --change norm_position=pre --lrs 3e-4,1e-3,3e-3,1e-2

Writes to --out: ablation.csv, ablation.json, ablation.png and one run folder per run (runs/<name>/).
The method is explained in `scratchlm.ablate`.
"""

from __future__ import annotations

import argparse
import platform
import shlex
from pathlib import Path

from ..ablate import plan, run_ablation, table, write_results
from ..errors import ScratchLMError
from .common import add_config_args, config_from_args, split_overrides

NAME = "ablate"
HELP = "compare architecture changes, each trained for the same time"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train the baseline (the preset or config, with any --SECTION.KEY VALUE overrides) "
                       "and one run per --change, each for --budget seconds with the same data and seed, one after "
                       "another; print a table and write CSV, JSON and a plot.\n\n"
                       "  scratchlm ablate --preset tiny --budget 30 --change norm=rmsnorm --change mlp=swiglu\n"
                       "  scratchlm ablate --preset guide --change norm_position=pre --lrs 3e-4,1e-3,3e-3")
    add_config_args(p)
    p.add_argument("--budget", type=float, default=60.0, help="seconds of training per run (default 60)")
    p.add_argument("--change", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                   help="one run with these settings changed (repeatable); a key without a section is a model key")
    p.add_argument("--lrs", help="comma-separated learning rates: every run at each of them")
    p.add_argument("--out", help="folder for the results (default: runs/ablate-<preset>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace what --out already holds")
    p.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    cfg, default_out = config_from_args(args, split_overrides(rest), "ablate")
    try:
        lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else None
    except ValueError:
        raise ScratchLMError(f"--lrs {args.lrs}: write learning rates separated by commas, e.g. 3e-4,1e-3") from None
    runs = plan(cfg, args.change, args.budget, lrs)  # checks every change before anything trains
    out = Path(args.out or default_out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ScratchLMError(f"{out} is not empty; use --overwrite or another --out")
    print(f"{len(runs)} runs × {args.budget:g} s of training each (plus start-up and evaluation), one after another")
    rows = run_ablation(cfg, args.change, args.budget, out, lrs, say=lambda line: print(line, flush=True))
    print()
    print(table(rows))
    meta = {"command": command_line(args, rest), "budget": args.budget,
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}"}
    for path in write_results(rows, out, meta):
        print(f"wrote {path}")
    return 0


def command_line(args, rest: list[str]) -> str:
    """The command that reproduces these results (written into ablation.json)."""
    words = ["scratchlm", "ablate"]
    for flag, value in (("--preset", args.preset), ("--config", args.config), ("--data", args.data)):
        words += [flag, value] if value is not None else []
    words += ["--budget", f"{args.budget:g}"] + [w for c in args.change for w in ("--change", c)]
    words += (["--lrs", args.lrs] if args.lrs else []) + list(rest)
    return shlex.join(words)
