"""`scratchlm sweep lr`: the learning-rate range test, then a short grid sweep around its suggestion.

    scratchlm sweep lr --preset tiny --data.tokenizer char
    scratchlm sweep lr --preset tiny --grid-steps 300 --out runs/sweep-tiny

Writes to --out: lr_range.json/png, grid.json/png, and one run folder per grid rate.
The method is explained in `scratchlm.sweep`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ScratchLMError
from ..sweep import grid_rates, plot_grid, plot_range, range_test_for_config, run_grid
from .common import add_config_args, config_from_args, split_overrides

NAME = "sweep"
HELP = "learning-rate range test and grid sweep"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME,
        help=HELP,
        allow_abbrev=False,
        description="Learning-rate range test and grid sweep. Any config key can be set as --SECTION.KEY VALUE.",
    )
    p.add_argument("what", choices=["lr"], help="what to sweep (the learning rate)")
    add_config_args(p)
    p.add_argument("--out", help="folder for the results (default: runs/sweep-<preset>-<time>)")
    p.add_argument("--steps", type=int, default=100, help="range-test steps (default 100)")
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--max-lr", type=float, default=1.0)
    p.add_argument(
        "--grid-steps", type=int, default=200, help="training steps per grid rate (default 200; 0 = no grid)"
    )
    p.add_argument("--grid", help="comma-separated learning rates instead of the automatic grid")
    p.add_argument("--overwrite", action="store_true", help="replace what --out already holds")
    p.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    cfg, default_out = config_from_args(args, split_overrides(rest), "sweep")
    out = Path(args.out or default_out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ScratchLMError(f"{out} is not empty; use --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)

    # 1. range test, on a copy of a freshly initialised model
    res, cfg = range_test_for_config(cfg, out, args.steps, args.min_lr, args.max_lr, say=print)
    print(f"stopped: {res['stopped']}")
    print(
        f"lowest smoothed loss {res['min_smoothed_loss']:.3f} at lr {res['lr_min_loss']:.2e}; "
        f"steepest descent at lr {res['lr_steepest']:.2e}"
    )
    print(f"suggested learning rate: {res['suggested_lr']:.1e}  (lowest-loss rate ÷ 10)")
    (out / "lr_range.json").write_text(json.dumps(res, indent=1))
    if plot_range(res, out / "lr_range.png"):
        print(f"plot: {out / 'lr_range.png'}")
    else:
        print("(matplotlib is not installed: no plots; pip install matplotlib)")

    # 2. grid sweep
    if args.grid_steps <= 0:
        return 0
    rates = [float(x) for x in args.grid.split(",")] if args.grid else grid_rates(res["suggested_lr"])
    print(f"\ngrid sweep: {len(rates)} learning rates × {args.grid_steps} steps each")
    rows = run_grid(cfg, rates, args.grid_steps, out / "grid")
    best = min((r for r in rows if not r["diverged"]), key=lambda r: r["val_loss"], default=None)
    print("\n| learning rate | final val loss | final train loss |\n|---|---|---|")
    for r in rows:
        mark = "  ← best" if r is best else ""
        if r["diverged"]:
            print(f"| {r['lr']:.2g} | diverged | diverged |")
        else:
            print(f"| {r['lr']:.2g} | {r['val_loss']:.4f} | {r['final_train_loss']:.4f} |{mark}")
    (out / "grid.json").write_text(
        json.dumps(
            {
                "steps": args.grid_steps,
                "suggested_lr": res["suggested_lr"],
                "rows": rows,
                "best_lr": best["lr"] if best else None,
            },
            indent=1,
        )
    )
    if plot_grid(rows, res["suggested_lr"], out / "grid.png"):
        print(f"plot: {out / 'grid.png'}")
    if best:
        print(
            f"\nbest: lr {best['lr']:.2g}. Train with it: scratchlm train "
            + (f"--preset {args.preset} " if args.preset else "")
            + f"--train.lr {best['lr']:.2g}"
        )
    return 0
