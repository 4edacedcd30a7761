"""`scratchlm report RUN`: write the guide (PDF or HTML) from a run folder."""

from __future__ import annotations

import argparse
import sys
import time

from .common import no_extra_args

NAME = "report"
HELP = "write the guide as a PDF (or HTML) from a run folder: its tokenizer, model, curves, samples"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False,
                       description="Write 'Build a Large Language Model from Scratch' from a run folder: nine chapters "
                                   "that explain each idea, then show this run's tokenizer, model, curves, attention, "
                                   "samples and the doctor's findings. Parts the run lacks are named, with the "
                                   "command that produces them.")
    p.add_argument("run_dir", metavar="RUN", help="a run folder (the --out of scratchlm train)")
    p.add_argument("--out", help="output file (default: RUN/guide.pdf, or RUN/guide.html with --format html)")
    p.add_argument("--format", choices=("pdf", "html", "typ"),  # report.FORMATS, without loading the report extra
                   help="pdf (default), html (one self-contained page) or typ (the Typst source); taken from --out's "
                        "suffix when not given")
    p.add_argument("--memory", choices=["measure", "estimate", "skip"], default="estimate",
                   help="training memory per technique: measure a few steps of each variant (cached in RUN/report/), "
                        "estimate by formula (default; shows a cached measurement if there is one), or skip")
    p.add_argument("--no-samples", action="store_true", help="do not generate samples (faster)")
    p.add_argument("--compare", metavar="DIR", help="a `scratchlm tokenizer compare` output folder "
                                                     "(default: RUN/tokenizer-compare if present)")
    p.add_argument("--ablation", metavar="DIR",
                   help="a `scratchlm ablate` output folder (default: RUN/ablation if present)")
    p.add_argument("--finetuned", metavar="RUN", help="the fine-tuned run for the chapter on answering questions "
                                                       "(default: found beside RUN, fine-tuned from it)")
    p.add_argument("--evaluate", action="store_true", help="a fine-tuned run without scores yet: score it on the "
                                                          "held-out questions first (minutes on a CPU; saved in RUN)")
    p.add_argument("--quiet", action="store_true", help="print only the output path")
    p.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    from ..report import build_report  # Typst and matplotlib: loaded when a guide is written, not at every command

    no_extra_args(rest)
    t0 = time.perf_counter()
    say = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    result = build_report(args.run_dir, args.out, args.format, samples=not args.no_samples, memory=args.memory,
                          compare_dir=args.compare, ablation_dir=args.ablation, evaluate=args.evaluate,
                          finetuned_dir=args.finetuned, say=say)
    if not args.quiet:
        pages = f", {result['pages']} pages" if result.get("pages") else ""
        print(f"guide written: {result['path']} ({len(result['chapters'])} chapters, {result['figures']} figures"
              f"{pages}, {time.perf_counter() - t0:.1f} s)")
        for what in result["missing"]:
            print(f"  not in it yet: {what}")
    else:
        print(result["path"])
    return 0
