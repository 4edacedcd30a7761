"""What attention snapshots cost a training run: the same run with the recorder off and on, one process.

    python benchmarks/bench_snapshots.py                       # the main job's preset, 2 evaluation intervals
    python benchmarks/bench_snapshots.py --preset tiny --steps 100 --eval-interval 25 --rounds 2

"on" is what `scratchlm train` attaches by default (viz.snapshots and viz.tensorboard on,
one snapshot before the first step and one at every evaluation); "off" attaches nothing.
The figures drawn once at the end (viz.figures) are timed on their own, since they do not
grow with the length of the run. Rounds alternate the order (off, on / on, off) so that a
noisy neighbour on the machine hurts both alike; each mode keeps its fastest round. The
ratio is the wall time of the whole job (data, steps, evaluations, checkpoints).
The issue's target: on / off <= 1.05 at the default interval.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from scratchlm.config import build_config  # noqa: E402
from scratchlm.train import run_training  # noqa: E402
from scratchlm.train.events import Events  # noqa: E402
from scratchlm.viz import live  # noqa: E402


def one_run(cfg, out: Path, on: bool) -> float:
    events = Events()
    said = []
    if on:
        live.attach(events, cfg.viz, say=said.append)
    t0 = time.perf_counter()
    run_training(cfg, out, overwrite=True, events=events)
    wall = time.perf_counter() - t0
    if said:
        raise SystemExit(f"the recorder reported: {said}")
    return wall


def snapshot_seconds(run_dir: Path, cfg, repeats: int = 5) -> float:
    """Median seconds of one snapshot of the trained model (measure + save), as the recorder takes it."""
    import statistics

    from scratchlm.inference import load_run
    from scratchlm.viz.capture import token_labels
    from scratchlm.viz.snapshots import measure, save_snapshot

    run = load_run(run_dir)
    probe = [int(i) for i in run.tokenizer.encode("ROMEO: But soft, what light through yonder window breaks?")]
    probe = probe[: cfg.viz.prompt_tokens]
    ind = live.induction_ids(run.tokenizer, cfg.model.vocab_size, cfg.model.block_size, cfg.viz.induction_tokens)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        snap = measure(run.model, probe, ind)
        save_snapshot(run_dir / "bench", 0, snap, probe, token_labels(run.tokenizer, probe), ind)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_seconds_per_step(run_dir: Path) -> float:
    """Training seconds per step (the loop's own clock, evaluations excluded) from metrics.jsonl."""
    import json

    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    return steps[-1]["time"] / steps[-1]["step"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default", help="the main job's preset by default")
    ap.add_argument("--steps", type=int, default=0, help="training steps (default: two evaluation intervals)")
    ap.add_argument("--eval-interval", type=int, default=0, help="default: the preset's")
    ap.add_argument("--eval-tokens", type=int, default=0, help="validation tokens per evaluation (default: the "
                    "preset's); fewer make a snapshot's share larger, a harsher test")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--figures", action="store_true", help="also time drawing the figures at the end")
    args = ap.parse_args()
    base = build_config(args.preset)
    interval = args.eval_interval or base.train.eval_interval
    steps = args.steps or 2 * interval
    cfg = build_config(args.preset, overrides={"train.max_steps": steps, "train.max_time": 0.0,
                                               "train.eval_interval": interval, "sample.num_samples": 0,
                                               "train.eval_tokens": args.eval_tokens or base.train.eval_tokens,
                                               "viz.figures": False})
    best = {"off": float("inf"), "on": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                wall = one_run(cfg, Path(tmp) / mode, mode == "on")
                best[mode] = min(best[mode], wall)
                print(f"round {r + 1}: {mode:<3} {wall:7.1f} s", flush=True)
        # the parts: one snapshot (two forward passes + the file) against the training between two
        # evaluations, from this run's own step times; less noisy than the difference of two wall times
        snap_s, step_s = snapshot_seconds(Path(tmp) / "off", cfg), train_seconds_per_step(Path(tmp) / "off")
        n_snaps = len(list((Path(tmp) / "on" / "attention").glob("step_*.npz")))
        size = sum(p.stat().st_size for p in (Path(tmp) / "on" / "attention").glob("step_*.npz"))
        fig_s = None
        if args.figures:
            from scratchlm.viz.figures import render_all  # matplotlib: only for the one-off figures

            t0 = time.perf_counter()
            render_all(Path(tmp) / "on", Path(tmp) / "figures")
            fig_s = time.perf_counter() - t0
    m = cfg.model
    print(f"\npreset {args.preset}: {m.n_layer} layers × {m.n_head} heads × {m.n_embd}, context {m.block_size}; "
          f"{steps} steps, evaluation every {interval} steps over {cfg.train.eval_tokens} tokens; "
          f"{os.cpu_count()} CPUs, torch threads "
          f"{cfg.train.threads or 'auto'}")
    print(f"snapshots: {n_snaps} ({size / 1024:.0f} KB in all), probe {cfg.viz.prompt_tokens} tokens, "
          f"induction sequence 2 × {cfg.viz.induction_tokens}")
    print(f"job wall time: off {best['off']:.1f} s, on {best['on']:.1f} s -> on/off = {best['on'] / best['off']:.3f} "
          f"(target <= 1.05)")
    print(f"one snapshot: {snap_s * 1e3:.0f} ms; training between two evaluations: {interval} steps × "
          f"{step_s:.3f} s = {interval * step_s:.1f} s -> {snap_s / (interval * step_s):.2%} added per interval")
    if fig_s is not None:
        print(f"figures at the end (once per run, viz.figures): {fig_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
