"""Ablations: train a baseline and one run per change, each for the same time, and compare.

An architecture choice is worth what it buys on *your* machine in a fixed time: a change
that lowers the loss per step but makes each step slower may lose. So every run here gets
the same wall-clock budget, the same data and the same seed, one after another (never
side by side, which would make them compete for the CPU), and the table reports what the
run got from the budget:

    change  parameters  tokens/s  val loss  bits per byte  Δ bpb vs baseline  diverged

With several learning rates (`lrs`), every change is trained at each of them, and Δ is
taken against the baseline at the same rate: this is how post-norm's narrower range of
usable learning rates shows up as numbers (docs/architecture-choices.md).

    rows = run_ablation(build_config("tiny"), ["model.norm=rmsnorm", "model.mlp=swiglu"], budget=30, out=out)
    write_results(rows, out)    # ablation.csv, ablation.json, ablation.png

The runs are ordinary run folders (out/runs/<name>/) that `scratchlm sample` can read.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path

import torch

from .config import build_config, to_dict
from .errors import ScratchLMError
from .model import GPT
from .train import run_training

COLUMNS = ["change", "lr", "parameters", "steps", "tokens_per_s", "val_loss", "val_bpb", "delta_bpb", "diverged",
           "seconds", "run_dir"]


def parse_change(text: str) -> dict[str, str]:
    """'model.norm=rmsnorm' or several keys at once, 'model.norm=rmsnorm,model.mlp=swiglu', as {key: value}.
    A key without a section is a model key ('norm=rmsnorm')."""
    change = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key or not value:
            raise ScratchLMError(f"--change '{text}': write KEY=VALUE, e.g. model.norm=rmsnorm")
        change[key if "." in key else f"model.{key}"] = value
    return change


def label(change: dict[str, str]) -> str:
    """'norm=rmsnorm' for {'model.norm': 'rmsnorm'}: what a table row calls the change."""
    return ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in change.items()) or "baseline"


def budget_overrides(budget: float) -> dict:
    """The same time budget for every run: no step limit, one evaluation at the end, no samples."""
    return {"train.max_time": float(budget), "train.max_steps": 10**9, "train.eval_interval": 10**9,
            "train.checkpoint_interval": 0, "sample.num_samples": 0}


def plan(cfg, changes: list[str], budget: float, lrs: list[float] | None = None) -> list[dict]:
    """The runs, in order: the baseline and each change, at each learning rate. Every config is built
    (and so checked) here, before anything trains: a typo fails in a second, not after an hour."""
    if budget <= 0:
        raise ScratchLMError(f"--budget {budget:g}: seconds per run, must be positive")
    parsed = [{}] + [parse_change(c) for c in changes]
    runs = []
    for lr in lrs or [cfg.train.lr]:
        for change in parsed:
            over = {**change, **budget_overrides(budget), "train.lr": lr}
            try:
                run_cfg = build_config(base=to_dict(cfg), overrides=over)
            except ScratchLMError as e:
                raise ScratchLMError(f"--change {label(change)}: {e}") from None
            name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label(change)) + (f"-lr{lr:g}" if lrs else "")
            runs.append({"change": label(change), "overrides": change, "lr": lr, "config": run_cfg, "name": name})
    return runs


def count_parameters(model_cfg) -> int:
    """All parameters (a tied head counted once), without allocating them."""
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(model_cfg).parameters())


def run_one(run: dict, out: Path) -> dict:
    """Train one planned run; a run the guard stops (it diverged) is a result, not an error."""
    cfg, run_dir = run["config"], out / "runs" / run["name"]
    t0 = time.perf_counter()
    try:
        s = run_training(cfg, run_dir, overwrite=True)  # no events: no progress bar, no doctor
        val, bpb, steps, train_time, note = s["val_loss"], s["val_bpb"], s["step"], s["train_time"], ""
    except ScratchLMError as e:  # the guard rolled back until it gave up: diverged
        val, bpb, steps, train_time, note = math.nan, math.nan, 0, 0.0, str(e)
    saved = run_dir / "config.json"  # the vocabulary size is set from the tokenizer when the run starts
    model_cfg = build_config(base=json.loads(saved.read_text())).model if saved.exists() else cfg.model
    tokens = steps * cfg.train.batch_size * cfg.model.block_size
    row = {"change": run["change"], "lr": run["lr"], "parameters": count_parameters(model_cfg), "steps": steps,
           "tokens_per_s": tokens / train_time if train_time > 0 else 0.0,
           "val_loss": val if math.isfinite(val) else math.nan, "val_bpb": bpb if math.isfinite(bpb) else math.nan,
           "diverged": not math.isfinite(val), "seconds": time.perf_counter() - t0, "run_dir": str(run_dir)}
    return row | ({"error": note} if note else {})


def run_ablation(cfg, changes: list[str], budget: float, out: str | Path, lrs: list[float] | None = None,
                 say=lambda line: None) -> list[dict]:
    """Train the baseline and every change for `budget` seconds each, one after another; return one row per run
    (see COLUMNS). `say` gets a line as each run starts and ends."""
    out = Path(out)
    runs = plan(cfg, changes, budget, lrs)
    rows = []
    for i, run in enumerate(runs, 1):
        say(f"[{i}/{len(runs)}] {run['change']}" + (f" at lr {run['lr']:g}" if lrs else "") + f": {budget:g} s")
        row = run_one(run, out)
        rows.append(row)
        say("    diverged" + (f" ({row['error']})" if row.get("error") else "") if row["diverged"] else
            f"    {row['steps']} steps, {row['tokens_per_s']:,.0f} tokens/s, val loss {row['val_loss']:.4f}, "
            f"{row['val_bpb']:.3f} bits per byte")
    for row in rows:  # Δ against the baseline at the same learning rate
        base = next(r for r in rows if r["change"] == "baseline" and r["lr"] == row["lr"])
        row["delta_bpb"] = row["val_bpb"] - base["val_bpb"]
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table (what the command prints and the docs show)."""
    with_lr = len({r["lr"] for r in rows}) > 1
    head = ["change"] + (["lr"] if with_lr else []) + ["parameters", "tokens/s", "val loss", "bits per byte",
                                                      "Δ bpb vs baseline", "diverged"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        finite = not r["diverged"]
        cells = [r["change"]] + ([f"{r['lr']:g}"] if with_lr else []) + [
            f"{r['parameters'] / 1e6:.2f}M", f"{r['tokens_per_s']:,.0f}",
            f"{r['val_loss']:.3f}" if finite else "—", f"{r['val_bpb']:.3f}" if finite else "—",
            "—" if r["change"] == "baseline" or not math.isfinite(r["delta_bpb"]) else f"{r['delta_bpb']:+.3f}",
            "yes" if r["diverged"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(rows: list[dict], out: str | Path, meta: dict | None = None) -> list[Path]:
    """ablation.csv, ablation.json (rows plus `meta`: the command, budget, machine) and ablation.png
    (when matplotlib is installed). Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ablation.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    (out / "ablation.json").write_text(json.dumps({**(meta or {}), "rows": clean}, indent=1), encoding="utf-8")
    paths = [out / "ablation.csv", out / "ablation.json"]
    if plot(rows, out / "ablation.png", (meta or {}).get("budget")):
        paths.append(out / "ablation.png")
    return paths


def plot(rows: list[dict], path: Path, budget: float | None = None) -> bool:
    """Bits per byte per change (one bar each), or against the learning rate (one line per change).
    False when matplotlib is not installed."""
    try:
        import matplotlib  # optional, and slow to import: only when a plot is drawn

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    changes = list(dict.fromkeys(r["change"] for r in rows))
    lrs = sorted({r["lr"] for r in rows})
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(changes) + 2.0) if len(lrs) == 1 else (7, 4.5))
    finite = [r["val_bpb"] for r in rows if not r["diverged"]]
    if len(lrs) == 1:  # a dot per change; the axis need not start at 0, so dots (not bars)
        values = [next(r for r in rows if r["change"] == c) for c in changes]
        lo, hi = min(finite, default=0.0), max(finite, default=1.0)
        pad = 0.25 * (hi - lo) + 0.02
        y = list(range(len(changes)))[::-1]
        base = next((r for r in values if r["change"] == "baseline" and not r["diverged"]), None)
        if base:
            ax.axvline(base["val_bpb"], color="#888888", linestyle="--", linewidth=1)
        for yi, r in zip(y, values):
            if r["diverged"]:
                ax.text(hi + pad * 0.9, yi, "diverged", va="center", ha="right", color="#cc3311", fontsize=9)
                continue
            ax.plot(r["val_bpb"], yi, "o", color="#888888" if r is base else "#4477aa", markersize=8)
            delta = "" if r is base or not base else f"  ({r['val_bpb'] - base['val_bpb']:+.3f})"
            ax.text(r["val_bpb"], yi + 0.22, f"{r['val_bpb']:.3f}{delta}", ha="center", fontsize=8)
        ax.set_yticks(y, changes)
        ax.set_ylim(-0.6, len(changes) - 0.4)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel("validation bits per byte (lower is better; dashed: baseline)")
        ax.grid(axis="x", alpha=0.3)
    else:
        top = max(finite, default=1.0)
        for c in changes:
            pts = sorted((r["lr"], r["val_bpb"], r["diverged"]) for r in rows if r["change"] == c)
            line, = ax.plot([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], marker="o", label=c)
            bad = [p[0] for p in pts if p[2]]
            if bad:  # a diverged run has no loss: a cross at the top edge marks it
                ax.plot(bad, [top * 1.02] * len(bad), "x", color=line.get_color(), markersize=10)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("validation bits per byte")
        ax.legend(title="× = diverged", fontsize=9)
        ax.grid(alpha=0.3)
    ax.set_title("Ablation: the same data, seed and time per run" + (f" ({budget:g} s)" if budget else ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
