"""Calibrate the doctor's thresholds: train the tiny model at several learning rates and
print the statistics the detectors decide on (src/scratchlm/doctor/detectors.py).

Each run trains with the normal loop and the live doctor attached (so probes.jsonl holds
update-to-weight ratios every 10 steps and a repetition sample at each evaluation), then
the run folder is summarised:

    step-1 gap     step-1 loss − ln(vocab)                          (initial-loss detector)
    drop           step-1 loss − mean of the last window            (not decreasing: stuck)
    osc            mean |loss change| between consecutive steps in the last window
    gn first/last  grad-norm median of the first / last window after warm-up
    growth         last window's grad-norm median ÷ the lowest window median  (exploding)
    clip           fraction of steps after warm-up whose grad norm was clipped
    ratio          update-to-weight ratio ‖ΔW‖/‖W‖, median [min–max]
    rep / ref      repeated 4-grams in the last sample vs real text; distinct-2 (repetition)
    doctor         what fired, with the not-decreasing verdict

    python benchmarks/calibrate_doctor.py                     # tiny preset, char tokenizer, 150 steps
    python benchmarks/calibrate_doctor.py --steps 300 --lrs 2e-3,0.05 --set model.n_embd=16

It takes about two minutes on a 2-core CPU (seven runs of 150 steps); docs/troubleshooting.md
has the figures it printed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from scratchlm.config import build_config
from scratchlm.doctor.live import attach
from scratchlm.doctor.records import read_records
from scratchlm.errors import ScratchLMError
from scratchlm.train import run_training


def train(cfg, out: Path) -> str:
    """One run with the live doctor; returns how it ended."""
    try:
        run_training(cfg, out, overwrite=True, events=attach(quiet=True))
        return "finished"
    except ScratchLMError as e:  # the guard gives up on a diverging run
        return f"stopped: {str(e)[:60]}"


def stats(run_dir: Path, warmup: int, window: int) -> dict:
    run = read_records(run_dir)
    steps, probes = run["steps"], run["probes"]
    vocab = run["config"]["model"]["vocab_size"]
    losses = [s["loss"] for s in steps]
    after = [s for s in steps if s["step"] > warmup]
    finite = lambda xs: [x for x in xs if math.isfinite(x)]  # noqa: E731
    last = finite(losses[-window:])
    windows = [after[i:i + window] for i in range(0, len(after) - window + 1, window)]
    meds = [statistics.median(finite([s["grad_norm"] for s in w]) or [math.nan]) for w in windows]
    ratios = [p["update_ratio"] for p in probes if p.get("kind") == "update_ratio" and math.isfinite(p["update_ratio"])]
    reps = [p for p in probes if p.get("kind") == "repetition"]
    verdicts = [f["key"] + (f" ({f['numbers']['verdict']})" if "verdict" in f.get("numbers", {}) else "") + f" @{f['step']}"
                for f in run["findings"]]
    return {
        "gap": losses[0] - math.log(vocab) if steps else math.nan,
        "drop": losses[0] - statistics.fmean(last) if last else math.nan,
        "osc": statistics.fmean(abs(b - a) for a, b in zip(last, last[1:])) if len(last) > 1 else math.nan,
        "gn": (meds[0], meds[-1]) if meds else (math.nan, math.nan),
        "growth": meds[-1] / min(meds) if meds and min(meds) > 0 else math.nan,
        "clip": sum(bool(s.get("clipped")) for s in after) / max(1, len(after)),
        "ratio": (statistics.median(ratios), min(ratios), max(ratios)) if ratios else None,
        "rep": (reps[-1]["rep"], reps[-1]["ref_rep"], reps[-1]["distinct"]) if reps else None,
        "nonfinite": sum(not math.isfinite(x) for x in losses),
        "doctor": ", ".join(verdicts) or "nothing",
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--lrs", default="1e-7,3e-5,3e-4,2e-3,0.05,0.1,1.0", help="comma-separated learning rates")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override, repeatable")
    args = p.parse_args()
    window = min(50, max(10, args.steps // 10))  # the doctor's window (detectors.Board)
    print(f"preset {args.preset}, char tokenizer, {args.steps} steps, warm-up {args.warmup}, window {window}; "
          + (f"overrides {' '.join(args.set)}" if args.set else "no other overrides"))
    print("| lr | ended | step-1 gap | drop | osc | grad norm first → last (growth) | clip | update ratio median [min–max] "
          "| rep / ref (distinct-2) | NaN steps | doctor | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for lr in (float(x) for x in args.lrs.split(",")):
            cfg = build_config(args.preset, overrides=[
                "data.tokenizer=char", f"train.lr={lr}", f"train.max_steps={args.steps}", f"train.warmup_steps={args.warmup}",
                f"train.eval_interval={max(1, args.steps // 3)}", "train.eval_tokens=8192", "sample.num_samples=0", *args.set])
            out = Path(tmp) / f"lr_{lr:g}"
            t0 = time.perf_counter()
            ended = train(cfg, out)
            s = stats(out, args.warmup, window)
            r = "—" if s["ratio"] is None else "{:.1e} [{:.1e}–{:.1e}]".format(*s["ratio"])
            rep = "—" if s["rep"] is None else "{:.0%} / {:.0%} ({:.2f})".format(*s["rep"])
            print(f"| {lr:g} | {ended} | {s['gap']:+.3f} | {s['drop']:.2f} | {s['osc']:.3f} | {s['gn'][0]:.3g} → {s['gn'][1]:.3g} "
                  f"({s['growth']:.1f}×) | {s['clip']:.0%} | {r} | {rep} | {s['nonfinite']} | {s['doctor']} | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
