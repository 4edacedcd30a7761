"""Fine-tuning benchmark: from the main job's model to a model that answers reading questions.

    bash scripts/shakespeare.sh                                   # the main job's model: runs/shakespeare
    python benchmarks/bench_finetune.py --base runs/shakespeare   # ≤ 10 minutes of fine-tuning, then the eval

1. writes the built-in question task (`scratchlm data questions`): train.jsonl from the training
   plays, eval.jsonl from the three held-out plays;
2. fine-tunes the base run on train.jsonl for `--budget` seconds of training (train.max_time:
   the time spent in training steps; start-up and evaluations come on top, printed apart);
3. asks the fine-tuned model every held-out question (greedy) and prints exact match per
   kind, beside the base model asked in the same template and the majority answer;
4. checks the issue's target: ≥ 90% on "who speaks first" and ≥ 60% over all kinds.

`--train-questions N` also scores N questions about the *training* plays (their own names):
far higher than on the held-out plays means the model answers from the casts it learnt, not
by copying from the passage (docs/finetuning.md). The training passages' speakers are renamed at
random, as `scratchlm data questions` does; `--own-names` keeps them (`data questions --own-names`).

Timings depend on the machine and on what else runs on it: the load average at the start and
the end is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from scratchlm.finetune.evaluate import evaluate_run, read_questions, spread, table
from scratchlm.finetune.questions import KINDS, write_questions
from scratchlm.finetune.sft import run_finetune
from scratchlm.train.events import Events

TARGET_FIRST, TARGET_ALL = 0.90, 0.60


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the main job's run folder (or a checkpoint)")
    ap.add_argument("--out", default="runs/bench-finetune", help="where the questions and the fine-tuned run go")
    ap.add_argument("--budget", type=float, default=600, help="seconds of fine-tuning (default 600 = 10 minutes)")
    ap.add_argument("--limit", type=int, default=0, help="evaluate on N held-out questions, evenly spaced (0 = all)")
    ap.add_argument("--no-base", action="store_true", help="skip the base model's column (halves the eval time)")
    ap.add_argument("--train-questions", type=int, default=0, metavar="N",
                    help="also score N questions about the training plays (0 = none)")
    ap.add_argument("--own-names", action="store_true", help="fine-tune on passages with their own speakers' names "
                    "(by default they are renamed at random)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.lr=1e-3 train.batch_size=16")
    args = ap.parse_args()
    out = Path(args.out)
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    paths = write_questions(out / "questions", rename=not args.own_names)
    rows = read_questions(paths["eval"])
    rows = spread(rows, args.limit)

    events = Events()
    events.on("eval", lambda i: print(f"  step {i['step']:>5}: val loss {i['val_loss']:.4f} on the answers",
                                      flush=True))
    t0 = time.perf_counter()
    summary = run_finetune(args.base, paths["train"], out / "run", overwrite=True, events=events, say=print,
                           overrides=[f"train.max_time={args.budget}", "train.max_steps=100000", *args.overrides])
    wall_ft = time.perf_counter() - t0
    print(f"fine-tuning: {summary['step']} steps, {summary['train_time']:.0f} s of training "
          f"({wall_ft:.0f} s with start-up and evaluations), stopped by {summary['stopped_by']}")

    t0 = time.perf_counter()
    result = evaluate_run(out / "run" / "checkpoints" / "final", rows, baseline_model=not args.no_base)
    print(f"evaluation: {len(rows)} held-out questions in {time.perf_counter() - t0:.0f} s")
    for line in table(result):
        print(line)
    if args.train_questions:
        own_names = (paths["train"] if args.own_names
                     else write_questions(out / "questions-own-names", rename=False)["train"])  # their own names
        seen = spread([r for r in read_questions(own_names) if r["kind"] in KINDS], args.train_questions)
        print(f"the same run on {len(seen)} questions about the training plays (their own names):")
        for line in table(evaluate_run(out / "run" / "checkpoints" / "final", seen, baseline_model=False)):
            print(line)
    first, overall = result["model"].accuracy("first"), result["model"].accuracy()
    met = first >= TARGET_FIRST and overall >= TARGET_ALL
    print(f"target (≥ {TARGET_FIRST:.0%} who-speaks-first, ≥ {TARGET_ALL:.0%} overall after ≤ 10 min): "
          f"{'MET' if met else 'NOT MET'} — {first:.1%} and {overall:.1%} after {summary['train_time']:.0f} s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other processes share these CPUs)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
