"""`scratchlm data`: write built-in fine-tuning data sets as JSONL (today: the reading questions)."""

from __future__ import annotations

import argparse
import json

from ..finetune.questions import MAX_CHARS, counts, write_questions
from .common import no_extra_args

NAME = "data"
HELP = "write a built-in fine-tuning data set as JSONL (questions: reading questions from the plays)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False, description=HELP)
    sets = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    q = sets.add_parser("questions", allow_abbrev=False,
                        help="reading questions about passages of the plays (train: training plays, eval: held out)",
                        description="Who speaks first? Who speaks the line \"...\"? Which line does X say after "
                                    "\"...\"? — asked about short passages; the answer is a name or a line from the "
                                    "passage. train.jsonl comes from the training plays, eval.jsonl from the three "
                                    "held-out plays; train.jsonl also asks \"Which line does X say first?\" "
                                    "(kind \"opening\"). Deterministic: the same files every time.")
    q.add_argument("--out", required=True, metavar="DIR", help="folder for train.jsonl and eval.jsonl")
    q.add_argument("--max-chars", type=int, default=MAX_CHARS,
                   help=f"passage length in characters (default {MAX_CHARS}: fits a 128-token context)")
    q.add_argument("--eval-every", type=int, default=4, help="evaluation passages start every N speeches (default 4)")
    q.add_argument("--own-names", action="store_true",
                   help="keep the training passages' own speakers (by default they are renamed at random, half from "
                        "other plays and half invented, so a model cannot answer from the casts it knows; the "
                        "held-out plays always keep their names)")
    p.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    no_extra_args(rest)
    paths = write_questions(args.out, max_chars=args.max_chars, eval_every=args.eval_every, rename=not args.own_names)
    for split, path in paths.items():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        per_kind = counts(rows)
        print(f"{path}: {len(rows):,} questions (" + ", ".join(f"{n:,} {k}" for k, n in per_kind.items() if n) + ")")
    print(f"next: scratchlm finetune --init-from RUN --data {paths['train']}")
    return 0
