"""`scratchlm finetune`: supervised fine-tuning of a trained run on JSONL conversations, in a chat template."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..doctor.live import attach as attach_doctor
from ..finetune.sft import run_finetune
from ..train.events import Events
from .common import split_overrides
from .progress import Progress

NAME = "finetune"
HELP = "fine-tune a trained run on JSONL conversations (chat template, loss on the answers)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False,
                       description="Fine-tune a trained run on conversations, one JSON object per line: "
                                   '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", '
                                   '"content": ...}]} or {"prompt": ..., "response": ...}. The loss is on the '
                                   "assistant's tokens only. Any config key can be set as --SECTION.KEY VALUE "
                                   "(fine-tuning's defaults: lr 1e-3, 20 warmup steps, 1000 steps, eval every 100).")
    p.add_argument("--init-from", metavar="RUN_OR_CHECKPOINT", help="the trained run (or checkpoint) to start from")
    p.add_argument("--data", metavar="FILE.jsonl", help="training conversations (see `scratchlm data questions`)")
    p.add_argument("--val", metavar="FILE.jsonl", help="validation conversations (default: 5%% of --data held out)")
    p.add_argument("--out", help="run folder (default: runs/finetune-<data file name>)")
    p.add_argument("--max-steps", type=int, help="same as --train.max_steps")
    p.add_argument("--max-time", type=float, help="seconds of training; same as --train.max_time")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the fine-tuning run in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace the run --out already holds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-doctor", action="store_true", help="no live diagnostics (see `scratchlm doctor`)")
    p.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    overrides = split_overrides(rest)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_time is not None:
        overrides.append(f"train.max_time={args.max_time}")
    out = args.resume or args.out or f"runs/finetune-{Path(args.data or 'data').stem}"
    events = Events()
    progress = Progress(quiet=args.quiet)
    progress.attach(events)
    if not args.no_doctor:  # the doctor's live detectors, as for `scratchlm train`
        attach_doctor(events, quiet=args.quiet)
    summary = run_finetune(args.init_from, args.data, out, overrides=overrides, val_data=args.val,
                           resume=bool(args.resume), overwrite=args.overwrite, events=events, say=progress.say)
    if args.quiet or int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 reports
        return 0
    run_dir = summary["run_dir"]
    if summary["stopped_by"] == "signal":
        print(f"stopped at step {summary['step']}; checkpoint written. "
              f"Resume with: scratchlm finetune --resume {run_dir}")
    print(f"\nval loss {summary['val_loss']:.4f} nats per answer token after {summary['step']} steps "
          f"({summary['train_time']:.0f} s of training; stopped by {summary['stopped_by']})")
    print(f"run folder: {run_dir}  (chat_template.json and finetune.json beside the usual files)")
    print("next:")
    print(f"  scratchlm chat {run_dir}")
    print(f"  scratchlm eval {run_dir} --task questions")
    return 0
