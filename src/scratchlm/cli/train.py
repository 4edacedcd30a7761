"""`scratchlm train`: train a GPT (no arguments: the main job's preset on the built-in plays)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config import build_config
from ..doctor.live import attach as attach_doctor
from ..errors import ScratchLMError
from ..inference import load_run, sample_text
from ..train import run_training
from ..train.events import Events
from ..train.prepare import load_run_config
from ..train.runtime import pick_device
from ..viz.live import attach as attach_viz
from .common import add_config_args, split_overrides
from .common import config_from_args as common_config_from_args
from .progress import Progress

NAME = "train"
HELP = "train a model (no arguments: the built-in Shakespeare corpus)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False,
                       description="Train a GPT. Any config key can be set as --SECTION.KEY VALUE, "
                                   "e.g. --model.n_layer 8 --train.lr 1e-3.")
    add_config_args(p)
    p.add_argument("--out", help="run folder (default: runs/<preset>-<time>)")
    p.add_argument("--max-steps", type=int, help="same as --train.max_steps")
    p.add_argument("--max-time", type=float, help="seconds of training; same as --train.max_time")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last good checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run --out already holds")
    p.add_argument("--init-from", metavar="RUN_OR_CHECKPOINT",
                   help="start a new run from these weights (their model shape and tokenizer; a fresh optimizer)")
    p.add_argument("--verify", action="store_true", help="check the token cache's checksums (rebuilt if they fail)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-doctor", action="store_true", help="no live diagnostics (see `scratchlm doctor`)")
    p.set_defaults(run=run)
    return p


def config_from_args(args, rest: list[str]):
    """(config, run folder) from the command line: a preset or file plus overrides, or a run to resume."""
    overrides = split_overrides(rest)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_time is not None:
        overrides.append(f"train.max_time={args.max_time}")
    if args.resume:
        if args.preset or args.config:
            raise ScratchLMError("--resume takes the run's own config; drop --preset/--config")
        if args.data is not None:
            overrides.append(f"data.path={args.data}")
        return build_config(base=load_run_config(args.resume), overrides=overrides), args.resume
    cfg, default_out = common_config_from_args(args, overrides, "")
    return cfg, args.out or default_out


def run(args, rest: list[str]) -> int:
    cfg, out = config_from_args(args, rest)
    events = Events()
    progress = Progress(quiet=args.quiet)
    progress.attach(events)
    if not args.no_doctor:  # the doctor's live detectors: an extra the training core never imports
        attach_doctor(events, quiet=args.quiet)
    attach_viz(events, cfg.viz, say=progress.say)  # attention snapshots and figures (viz.*): an extra too
    summary = run_training(cfg, out, resume=bool(args.resume), overwrite=args.overwrite, events=events,
                           say=progress.say, verify=args.verify, init_from=args.init_from)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 reports
        return 0
    run_dir = Path(summary["run_dir"])
    if summary["stopped_by"] == "signal":  # said even when quiet: how to carry on
        print(f"stopped at step {summary['step']}; checkpoint written. Resume with: scratchlm train --resume {run_dir}")
    if args.quiet:
        return 0
    if cfg.sample.num_samples:
        print_samples(run_dir, str(pick_device(cfg.train.device)[0]))
    print(f"\nval loss {summary['val_loss']:.4f} nats/token = {summary['val_bpb']:.3f} bits per byte on held-out text "
          f"after {summary['step']} steps ({summary['train_time']:.0f} s of training; "
          f"stopped by {summary['stopped_by']})")
    print(f"run folder: {run_dir}  (config.json, tokenizer.json, metrics.jsonl, checkpoints/, samples.txt)")
    print("next:")
    print(f"  scratchlm sample {run_dir} --prompt 'ROMEO:' --temperature 0.8")
    print(f"  scratchlm train --resume {run_dir} --max-time 600        # train longer")
    print("  scratchlm train --model.n_embd 384 --train.max_time 900      # a wider model")
    return 0


def print_samples(run_dir: Path, device: str = "cpu") -> None:
    """Sample from the weights training ended with (final/, else the newest checkpoint), print the
    texts as they come, and keep them in samples.txt."""
    final = run_dir / "checkpoints" / "final"
    trained = load_run(final if final.is_dir() else run_dir, device=device)
    sc = trained.config.sample
    print(f"\nsamples (temperature {sc.temperature}, top-p {sc.top_p}):")
    texts = sample_text(trained.model, trained.tokenizer, sc, out=sys.stdout)
    (run_dir / "samples.txt").write_text("\n\n".join(texts))
