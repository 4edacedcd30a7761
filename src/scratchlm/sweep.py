"""`scratchlm sweep lr`: find a good learning rate in minutes instead of by trial and error.

1. The learning-rate range test (Smith 2015, "Cyclical Learning Rates"; popularised by
   fast.ai): train a *copy* of the freshly initialised model for a few dozen steps while
   the learning rate grows exponentially from tiny to huge. The loss first barely moves
   (lr too low), then falls fast, then blows up (lr too high). We smooth the loss with
   an exponential moving average, stop once it blows up, and suggest the rate where the
   smoothed loss was lowest, divided by 10 — a rate safely inside the falling region.
   The original model's weights are never touched.

2. A short grid sweep: a few learning rates around the suggestion (and 3e-4, the usual
   AdamW default), each trained with the normal training loop for the same small budget.
   The final validation losses are printed as a table and plotted; a rate that diverges
   is marked "diverged" (val_loss NaN) and the sweep goes on with the next one.

    scratchlm sweep lr --preset tiny --data.tokenizer char
    scratchlm sweep lr --preset tiny --grid-steps 300 --out runs/sweep-tiny

Writes to --out: lr_range.json/png, grid.json/png, and one run folder per grid rate.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch

from .config import build_config, to_dict
from .errors import ScratchLMError
from .train import run_training
from .train.loop import Trainer
from .train.optim import make_optimizer
from .train.prepare import prepare
from .train.runtime import set_threads, setup_runtime, teardown


# ---- the range test ------------------------------------------------------------------
def lr_range_test(
    model,
    get_batch,
    *,
    steps: int = 100,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    weight_decay: float = 0.1,
    betas=(0.9, 0.95),
    grad_clip: float = 1.0,
    beta: float = 0.9,
    autocast=None,
    device_type: str = "cpu",
    say=lambda *a: None,
) -> dict:
    """Exponential learning-rate ramp on a deep copy of `model`; `get_batch(i)` returns (x, y).

    Returns lrs, raw and smoothed losses, why it stopped, and the suggested learning rate."""
    trial = copy.deepcopy(model)  # the caller's model keeps its weights
    trial.train()
    opt, _ = make_optimizer(trial, min_lr, weight_decay, betas, device_type)
    autocast = autocast or (lambda: torch.autocast(device_type, enabled=False))
    lrs, losses, smooth = [], [], []
    avg, best, stop = 0.0, float("inf"), "reached max_lr"
    growth = (max_lr / min_lr) ** (1 / max(1, steps - 1))
    for i in range(steps):
        lr = min_lr * growth**i
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch(i)
        with autocast():
            _, loss = trial(x, y)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trial.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        if not math.isfinite(value):
            stop = f"loss became {value} at lr {lr:.2e}"
            break
        # exponential moving average, bias-corrected so the first values are not pulled to 0
        avg = beta * avg + (1 - beta) * value
        s = avg / (1 - beta ** (i + 1))
        lrs.append(lr), losses.append(value), smooth.append(s)
        best = min(best, s)
        if i % 10 == 0:
            say(f"  lr {lr:.2e}  loss {value:.3f}  smoothed {s:.3f}")
        first = smooth[0]
        # blow-up: 4× the best loss, or (once something was learned) back more than halfway up to the start
        if s > 4 * best or (best < first - 0.2 and s > best + (first - best) / 2):
            stop = f"smoothed loss blew up ({s:.3f}, best {best:.3f}) at lr {lr:.2e}"
            break
    del trial, opt
    if len(smooth) < 3:
        raise ScratchLMError(f"the range test stopped after {len(smooth)} steps ({stop}); lower --min-lr")
    i_min = min(range(len(smooth)), key=smooth.__getitem__)
    # the steepest descent of the smoothed loss against log(lr), before the minimum
    slopes = [(smooth[i + 1] - smooth[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1]) for i in range(1, max(2, i_min))]
    i_steep = 1 + min(range(len(slopes)), key=slopes.__getitem__) if slopes else i_min
    return {
        "lrs": lrs,
        "losses": losses,
        "smoothed": smooth,
        "stopped": stop,
        "steps_run": len(smooth),
        "lr_min_loss": lrs[i_min],
        "min_smoothed_loss": smooth[i_min],
        "lr_steepest": lrs[i_steep],
        "suggested_lr": lrs[i_min] / 10,
    }


def weights_equal(a: torch.nn.Module, b_state: dict) -> bool:
    return all(torch.equal(v, b_state[k]) for k, v in a.state_dict().items())


# ---- the grid ------------------------------------------------------------------------
def grid_rates(suggested: float, extra: float = 3e-4) -> list[float]:
    """The suggestion ×1/3, ×1, ×3, and `extra`; near-duplicates (within 25%) dropped."""
    rates = []
    for lr in sorted([suggested / 3, suggested, suggested * 3, extra]):
        lr = float(f"{lr:.2g}")  # readable numbers in the table
        if not rates or lr > rates[-1] * 1.25:
            rates.append(lr)
    return rates


def run_grid(cfg, rates: list[float], steps: int, out: Path, say=print) -> list[dict]:
    """Train one short run per learning rate with the normal loop; same seed and data for all.
    A rate that diverges (the guard gives up, or the losses end non-finite) is a result, not
    an error: its row gets val_loss NaN and diverged True, and the sweep goes on."""
    rows = []
    for lr in rates:
        c = build_config(
            base=to_dict(cfg),
            overrides={
                "train.lr": lr,
                "train.max_steps": steps,
                "train.max_time": 0.0,
                "train.warmup_steps": max(1, steps // 10),
                "train.eval_interval": steps,
                "train.checkpoint_interval": 0,
            },
        )
        t0 = time.perf_counter()
        try:
            s = run_training(c, out / f"lr_{lr:.2g}", overwrite=True)  # no doctor: no events attached
            val, train, note = s["val_loss"], s["final_train_loss"], ""
        except ScratchLMError as e:  # the guard stopped a diverging run
            val, train, note = math.nan, math.nan, str(e)
        # diverged: non-finite, or ended worse than a uniform guess over the vocabulary (ln V nats)
        diverged = not (math.isfinite(val) and math.isfinite(train)) or val > math.log(c.model.vocab_size)
        row = {
            "lr": lr,
            "val_loss": val if math.isfinite(val) else math.nan,
            "final_train_loss": train,
            "diverged": diverged,
            "seconds": time.perf_counter() - t0,
        } | ({"error": note} if note else {})
        rows.append(row)
        say(
            f"  lr {lr:<8.2g} "
            + (
                "diverged" + (f" ({note})" if note else "")
                if diverged
                else f"val loss {val:.4f}   train loss {train:.4f}"
            )
            + f"   ({row['seconds']:.0f} s)"
        )
    return rows


# ---- plots -----------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no window: works on servers and in tests
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_range(res: dict, path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(res["lrs"], res["losses"], color="0.75", lw=1, label="loss")
    ax.plot(res["lrs"], res["smoothed"], color="C0", lw=2, label="smoothed loss")
    ax.axvline(res["suggested_lr"], color="C2", ls="--", label=f"suggested {res['suggested_lr']:.1e} (min ÷ 10)")
    ax.axvline(res["lr_min_loss"], color="C3", ls=":", label=f"lowest loss at {res['lr_min_loss']:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (nats/token)")
    top = max(res["smoothed"][0], res["min_smoothed_loss"]) + 0.5
    ax.set_ylim(min(res["losses"]) - 0.1, top)
    ax.set_title("Learning-rate range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_grid(rows: list[dict], suggested: float, path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ok = [r for r in rows if not r.get("diverged") and math.isfinite(r["val_loss"])]
    ax.plot([r["lr"] for r in ok], [r["val_loss"] for r in ok], "o-", color="C0")
    for r in ok:
        ax.annotate(
            f"{r['val_loss']:.3f}", (r["lr"], r["val_loss"]), textcoords="offset points", xytext=(0, 6), ha="center"
        )
    # diverged rates have no loss to plot: a red cross at the top edge marks each one
    for i, r in enumerate(r for r in rows if r not in ok):
        ax.plot(
            r["lr"],
            1,
            "x",
            color="C3",
            ms=10,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label="diverged" if i == 0 else None,
        )
    ax.axvline(suggested, color="C2", ls="--", label=f"range-test suggestion {suggested:.1e}")
    ax.axvline(3e-4, color="0.5", ls=":", label="3e-4 (AdamW default)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title("Grid sweep: same budget per learning rate")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- the range test on a configuration ---------------------------------------------------
def range_test_for_config(
    cfg, out: Path, steps: int = 100, min_lr: float = 1e-6, max_lr: float = 1.0, say=lambda *a: None
) -> tuple[dict, object]:
    """Prepare the data and a freshly initialised model for `cfg` (in out/range_test) and run the
    range test on a copy of it. Returns (result, the prepared run's resolved config)."""
    if not 0 < min_lr < max_lr:
        raise ScratchLMError(f"need 0 < --min-lr < --max-lr (got {min_lr:g}, {max_lr:g})")
    if steps < 5:
        raise ScratchLMError("--steps must be at least 5")
    rt = setup_runtime(cfg.train)
    try:
        set_threads(cfg.train.threads)
        p = prepare(cfg, out / "range_test", say=say)
        trainer = Trainer(p.cfg, p.run_dir, p.tok, p.tok_hash, p.data, rt)
        model, tc = trainer.raw_model, p.cfg.train
        before = {k: v.clone() for k, v in model.state_dict().items()}
        micro = tc.micro_batch_size or tc.batch_size
        say(
            f"range test: lr {min_lr:.0e} → {max_lr:.0e} over {steps} steps "
            f"({micro} sequences × {p.cfg.model.block_size} tokens per step) on a copy of the model"
        )
        res = lr_range_test(
            model,
            lambda i: trainer.train_batches.get(i, 0, micro),
            steps=steps,
            min_lr=min_lr,
            max_lr=max_lr,
            weight_decay=tc.weight_decay,
            betas=(tc.beta1, tc.beta2),
            grad_clip=tc.grad_clip,
            autocast=rt.autocast,
            device_type=rt.device.type,
            say=say,
        )
        res["weights_untouched"] = weights_equal(model, before)
    finally:
        teardown(rt)
    return res, p.cfg
