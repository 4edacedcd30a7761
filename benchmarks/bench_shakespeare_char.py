"""Tiny Shakespeare, character level: time to reach a published validation loss.

Trains on a text file (default ../shared/data/tinyshakespeare/input.txt; first 90% train,
last 10% validation, as nanoGPT does) for a fixed wall-clock budget and prints validation
loss in nats/char, bits per byte, tokens/s, and the training time at which the validation
loss first reached the target (default 1.886: what a nanoGPT-style fp32 GPT of 4 layers,
4 heads, 128 wide, context 64, batch 12 reaches after 2000 steps, ~100 s on a 2-core CPU).

With --reference, the nanoGPT-style fp32 model (benchmarks/nanogpt_reference.py) is trained
in the same process on the same split for its 2000 steps, and the ratio is printed.

Two sets of settings:
  best (default)  our best settings for a budget of seconds: ONE layer of the reference's
                  width (128) and context (64), batch 16, lr 6e-3 held constant, then a
                  linear cool-down over the last 40% (wsd). In 20 s a 4-layer model sees a
                  quarter of the tokens a 1-layer model sees, and on this CPU the tokens win;
  --same-shape    the reference's own shape (4 layers), with our best recipe for it.

    python benchmarks/bench_shakespeare_char.py [--budget 20] [--same-shape] [--reference] [--SECTION.KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

# Our best settings for the reference's shape (4 layers, 4 heads, 128 wide, context 64) on this CPU.
SAME_SHAPE = {
    "model.block_size": 64, "model.n_layer": 4, "model.n_head": 4, "model.n_embd": 128,
    "data.tokenizer": "char", "data.val_fraction": 0.1,
    "train.batch_size": 16, "train.lr": 3e-3, "train.min_lr_ratio": 0.05, "train.warmup_steps": 50, "train.beta2": 0.99,
    "train.schedule": "cosine", "train.eval_interval": 50, "train.eval_tokens": 1_000_000, "train.dtype": "auto",
    "sample.num_samples": 0,
}
# Our best settings, shape included, for a budget of about 20 s (a sweep of depth, width,
# batch, lr and schedule at 20-40 s budgets: the table is in docs/scaling.md).
BEST = dict(SAME_SHAPE, **{"model.n_layer": 1, "train.lr": 6e-3, "train.schedule": "wsd", "train.cooldown_frac": 0.4,
                           "train.min_lr_ratio": 0.0})


def run_ours(data: Path, budget: float, target: float, overrides: list[str], settings: dict,
             keep: Path | None = None) -> dict:
    """Train our model; `keep`: a folder to keep the run in (with its attention snapshots when the
    config asks for them), instead of a temporary one."""
    from scratchlm.config import build_config
    from scratchlm.train import run_training
    from scratchlm.train.events import Events
    from scratchlm.viz.live import attach

    flat = dict(settings, **{"data.path": str(data), "train.max_time": budget, "train.max_steps": 1_000_000})
    for o in overrides:
        k, _, v = o.partition("=")
        flat[k] = v
    cfg = build_config(overrides=flat)
    evals, times = [], {}
    events = Events()
    events.on("step_end", lambda i: times.__setitem__("t", i["time"]))
    events.on("eval", lambda i: evals.append((times.get("t", 0.0), i["step"], i["val_loss"], i["val_bpb"])))
    attach(events, cfg.viz)  # attention snapshots, if the config records them (as `scratchlm train` does)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("SCRATCHLM_CACHE", str(Path(tmp) / "cache"))
        run = keep if keep is not None else Path(tmp) / "run"
        t0 = time.perf_counter()
        summary = run_training(cfg, run, events=events, overwrite=keep is not None)
        wall = time.perf_counter() - t0
        steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    tok_s = [r["tokens_per_s"] for r in steps if "tokens_per_s" in r][10:]
    reached = next((e for e in evals if e[2] <= target), None)
    return {"summary": summary, "evals": evals, "reached": reached, "wall": wall,
            "tokens_per_s": sorted(tok_s)[len(tok_s) // 2] if tok_s else float("nan")}


def run_reference(data: Path, target: float, steps: int = 2000) -> dict:
    import nanogpt_reference as ref

    text = data.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]
    torch.manual_seed(1337)
    model = ref.NanoGPT(len(chars), 64, 4, 4, 128)
    opt = ref.make_optimizer(model)
    g = torch.Generator().manual_seed(1337)
    t_train, reached = 0.0, None
    for it in range(steps):
        ix = torch.randint(len(train) - 65, (12,), generator=g)
        x = torch.stack([train[i : i + 64] for i in ix])
        y = torch.stack([train[i + 1 : i + 65] for i in ix])
        t0 = time.perf_counter()
        ref.train_step(model, opt, x, y, ref.lr_at(it))
        t_train += time.perf_counter() - t0
        if (it + 1) % 250 == 0 and reached is None:
            if ref.evaluate(model, val, 64) <= target:
                reached = t_train
    final = ref.evaluate(model, val, 64)
    return {"final_val": final, "train_time": t_train, "reached": reached, "tokens_per_s": steps * 12 * 64 / t_train}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--budget", type=float, default=None, help="seconds of training for scratchlm (default 20; 100 with --same-shape)")
    ap.add_argument("--same-shape", action="store_true", help="train the reference's 4-layer shape instead of our best")
    ap.add_argument("--target", type=float, default=1.886, help="validation loss to reach (nats/char)")
    ap.add_argument("--reference", action="store_true", help="also train the nanoGPT-style fp32 reference (2000 steps)")
    args, rest = ap.parse_known_args()
    if not args.data.exists():
        sys.exit(f"benchmark text not found: {args.data} (pass --data PATH; Tiny Shakespeare lives in shared/data)")
    overrides = [f"{rest[i][2:]}={rest[i + 1]}" for i in range(0, len(rest), 2)]
    print(f"data {args.data} ({args.data.stat().st_size / 1e6:.2f} MB), 90/10 split, char level; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    settings = SAME_SHAPE if args.same_shape else BEST
    budget = args.budget or (100.0 if args.same_shape else 20.0)
    print(f"scratchlm : {'the reference shape' if args.same_shape else 'best settings'}: "
          + ", ".join(f"{k.split('.')[1]} {v}" for k, v in settings.items() if k.startswith(("model.", "train.")) and "eval" not in k))
    ours = run_ours(args.data, budget, args.target, overrides, settings)
    s = ours["summary"]
    print(f"scratchlm : {s['step']} steps in {s['train_time']:.1f} s of training, val {s['val_loss']:.4f} nats/char "
          f"= {s['val_bpb']:.3f} bits/byte (best {s['best_val_loss']:.4f}), median {ours['tokens_per_s']:,.0f} tokens/s")
    if ours["reached"]:
        t, step, v, _ = ours["reached"]
        print(f"scratchlm : reached val {v:.4f} <= {args.target} at step {step}, after {t:.1f} s of training")
    else:
        print(f"scratchlm : did not reach {args.target} within {budget:.0f} s")
    if args.reference:
        r = run_reference(args.data, args.target)
        print(f"reference : nanoGPT-style fp32, 2000 steps in {r['train_time']:.1f} s, val {r['final_val']:.4f}, "
              f"{r['tokens_per_s']:,.0f} tokens/s" + (f", reached {args.target} after {r['reached']:.1f} s" if r["reached"] else ""))
        if ours["reached"] and r["reached"]:
            print(f"time to {args.target}: scratchlm {ours['reached'][0]:.1f} s vs reference {r['reached']:.1f} s "
                  f"= {r['reached'] / ours['reached'][0]:.2f}x faster")


if __name__ == "__main__":
    main()
