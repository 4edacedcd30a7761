"""`scratchlm eval`: exact-match accuracy of a run on a question set, with baselines in the same table."""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import ScratchLMError
from ..finetune.evaluate import builtin_questions, evaluate_run, read_questions, save_result, spread, table
from ..inference import load_run
from .common import no_extra_args

NAME = "eval"
HELP = "exact-match accuracy of a run on held-out questions (--task questions), with baselines"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False,
                       description="Ask a run every question of a set in the chat template (greedy answers) and "
                                   "count exact matches, per kind of question, beside the majority answer and the "
                                   "base model the run was fine-tuned from.")
    p.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", choices=["questions"], help="a built-in task: questions = the held-out plays' questions")
    src.add_argument("--data", metavar="FILE.jsonl", help="your own questions (the last message is the answer)")
    p.add_argument("--limit", type=int, default=0, help="only N questions, evenly spaced through the set (0 = all)")
    p.add_argument("--no-base", action="store_true", help="leave out the base model's column (half the time)")
    p.add_argument("--figure", metavar="DIR", help="draw which heads copy the answer, for the first question "
                                                   "answered right (DIR/copying_heads.png and .svg)")
    p.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    no_extra_args(rest)
    if args.task:
        rows = builtin_questions()
    else:
        rows = read_questions(args.data)
    if args.limit < 0:
        raise ScratchLMError("--limit must be >= 0")
    rows = spread(rows, args.limit)
    t0 = time.perf_counter()

    def progress(i, n):
        if sys.stderr.isatty():
            print(f"\r{i}/{n} questions", end="", file=sys.stderr, flush=True)

    result = evaluate_run(args.path, rows, baseline_model=not args.no_base, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    source = f"task {args.task} (held-out plays)" if args.task else args.data
    print(f"exact match on {len(rows)} questions from {source}; {result['run']}"
          + (" (a base run: the chat tokens were added as fine-tuning adds them)" if result["grown"] else ""))
    for line in table(result):
        print(line)
    if "base_path" in result:
        print(f"base model: {result['base_path']}")
    print("majority answer per kind: " + ", ".join(f"{k}: {a[:30]!r}" for k, a in result["majority_answers"].items()))
    if result["model"].too_long:
        print(f"{result['model'].too_long} question(s) left no room for an answer in the context (counted wrong)")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.task and not args.limit:  # the whole built-in task: kept for the guide (scratchlm report)
        print(f"scores saved: {save_result(result, len(rows), result['run_dir'])}")
    hit = result["model"].first_hit
    if args.figure and hit:
        from ..finetune.copying import copy_figure  # matplotlib: loaded only when a figure is asked for

        run = load_run(args.path)
        paths = copy_figure(run.model, run.tokenizer, *hit, args.figure,
                            title=f"{run.run_dir.name}: answer {hit[1]!r}, which heads copy it from the passage")
        print(f"figure: {paths[0]} (which heads copy the answer from the passage)")
    elif args.figure:
        print("no figure: no question was answered right")
    for question, expected, got in result["examples"][:3]:
        print(f"\nQ: {question}\nexpected: {expected}\nanswer:   {got}")
    return 0
