"""`scratchlm memory CONFIG_OR_PRESET [--section.key VALUE ...]`: estimate, then measure, training memory and speed.

The formulas and the measurement live in `scratchlm.train.memory`; this prints them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from ..config import build_config, presets
from ..train.memory import estimate, fmt_bytes, measure_in_subprocess, variants, vocab_for
from .common import split_overrides

NAME = "memory"
HELP = "estimate and measure training memory and speed for a config"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME, help=HELP, allow_abbrev=False, description="Estimate, then measure, training memory and speed."
    )
    p.add_argument("config", help=f"a preset ({', '.join(presets())}) or a TOML config file")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant (default 3)")
    p.add_argument("--no-measure", action="store_true", help="only the formula estimate")
    p.set_defaults(run=run)
    return p


def report(cfg, steps: int, measure: bool, out=print) -> list[dict]:
    est = estimate(cfg)
    m, tc = cfg.model, cfg.train
    out(
        f"model {m.n_layer} layers × {m.n_head} heads × {m.n_embd} wide, context {m.block_size}, vocab "
        f"{m.vocab_size}: "
        f"{est['parameters'] / 1e6:.2f}M parameters"
    )
    out(
        f"batch {tc.batch_size} sequences per step, micro-batch {est['micro_batch']}, dtype {tc.dtype}, "
        f"activation checkpointing {tc.activation_checkpointing}"
    )
    out("\nestimate (formula):")
    total = 0
    for key, label in (
        ("weights", "weights (fp32 master)"),
        ("gradients", "gradients (fp32)"),
        ("adamw", "AdamW moments (2 × fp32)"),
        ("activations", "activations + logits (one micro-batch)"),
    ):
        total += est[key]
        out(f"  {label:<40} {fmt_bytes(est[key]):>12}")
    out(f"  {'total for training':<40} {fmt_bytes(total):>12}")
    out(f"  {'KV cache for generation, per sequence':<40} {fmt_bytes(est['kv_cache']):>12}")
    out("  (under FSDP over W GPUs weights, gradients and AdamW are divided by W: --train.fsdp true)")
    if not measure:
        return []
    out(f"\nmeasured ({steps} steps of each variant after one warm-up step; random tokens):")
    out(f"  {'variant':<34} {'peak memory':>12} {'tokens/s':>10}")
    rows = []
    for label, vcfg in variants(cfg):
        r = measure_in_subprocess(vcfg, steps)
        r["variant"] = label
        rows.append(r)
        if "error" in r:
            out(f"  {label:<34} failed: {r['error']}")
        else:
            out(f"  {label:<34} {fmt_bytes(r['peak_bytes']):>12} {r['tokens_per_s']:>10,.0f}")
    where = rows[0].get("device", "cpu") if rows else "cpu"
    out(
        "  peak = "
        + (
            "torch.cuda.max_memory_allocated"
            if where.startswith("cuda")
            else "resident memory above the idle process (weights, gradients, AdamW, activations, allocator slack)"
        )
    )
    return rows


def run(args, rest: list[str]) -> int:
    overrides = split_overrides(rest)
    is_file = args.config.endswith(".toml") or os.path.exists(args.config)
    cfg = build_config(None if is_file else args.config, args.config if is_file else None, overrides)
    if not any(o.startswith("model.vocab_size=") for o in overrides):
        vocab, why = vocab_for(cfg)
        cfg = replace(cfg, model=replace(cfg.model, vocab_size=vocab))
        print(f"vocabulary {vocab}: {why}")
    report(cfg, args.steps, not args.no_measure)
    return 0
