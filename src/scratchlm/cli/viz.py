"""`scratchlm viz`: figures of a run — Q/K/V, attention maps and their evolution, curves, sampling, tokens."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ScratchLMError
from .common import no_extra_args

NAME = "viz"
HELP = "figures of a run: Q/K/V walkthrough, attention maps and their evolution, curves, sampling, tokens"

KINDS = {
    "qkv": "one head's attention step by step (X, Q, K, V, scores, mask, weights, output) and the Q/K/V cubes",
    "attention": "the attention map of every layer and head on a prompt",
    "evolution": "attention during training, from the snapshots recorded at each evaluation (film strip, GIF, "
                 "per-head metrics)",
    "curves": "loss, bits per byte, learning rate, gradient norm, tokens/s against step (doctor's findings marked)",
    "sampling": "the next-token distribution at several temperatures, with top-k and top-p cut-offs shaded",
    "tokens": "a text with its token boundaries",
    "all": "every figure the run has data for",
}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False,
                       description="Draw figures (PNG and SVG) of a run folder into RUN/figures/ (or --out). "
                                   "docs/attention.md explains what they show.")
    kinds = p.add_subparsers(dest="kind", metavar="FIGURE", required=True)
    for kind, text in KINDS.items():
        k = kinds.add_parser(kind, help=text, description=text, allow_abbrev=False)
        k.add_argument("path", metavar="RUN", help="a run folder (or a checkpoint folder inside one)")
        k.add_argument("--out", help="folder for the figures (default: RUN/figures)")
        if kind in ("qkv", "attention", "sampling", "all"):
            k.add_argument("--prompt", help="the text to look at (default: the run's probe prompt, or a line of "
                                            "Shakespeare)")
        if kind in ("qkv", "all"):
            k.add_argument("--layer", type=int, default=0, help="layer of the head to take apart (default 0)")
            k.add_argument("--head", type=int, default=0, help="head within the layer (default 0)")
        if kind == "sampling":
            k.add_argument("--temperatures", default="0.5,1,1.5", help="comma-separated (default 0.5,1,1.5)")
            k.add_argument("--top-k", type=int, help="default: the run's sample.top_k, or 10 when it is off")
            k.add_argument("--top-p", type=float, help="default: the run's sample.top_p")
        if kind == "tokens":
            k.add_argument("--text", required=True, help="the text to cut into tokens")
    p.set_defaults(run=run)
    return p


def _temperatures(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ScratchLMError(f"--temperatures {text!r}: give numbers separated by commas, e.g. 0.5,1,1.5") from None
    if not values:
        raise ScratchLMError("--temperatures needs at least one value")
    return values


def run(args, rest: list[str]) -> int:
    no_extra_args(rest)
    from ..viz import figures  # matplotlib: loaded only when a figure is drawn

    path = Path(args.path)
    if not path.exists():
        raise ScratchLMError(f"{path} does not exist")
    out = Path(args.out) if args.out else None
    kind = args.kind
    if kind in ("evolution", "curves"):  # from the run's records alone: no model to load
        run_dir = path if (path / "config.json").exists() else path.parent.parent
        fn = figures.evolution if kind == "evolution" else figures.curves
        paths = fn(run_dir, out or run_dir / "figures")
    elif kind == "tokens":
        from ..tokenizer import load_tokenizer  # only this figure needs it: no model is loaded

        run_dir = path if path.is_dir() else path.parent
        tok_path = run_dir / "tokenizer.json" if path.is_dir() else path
        if not tok_path.exists():
            raise ScratchLMError(f"{tok_path} not found: give a run folder (it holds tokenizer.json)")
        paths = figures.tokens(load_tokenizer(tok_path), args.text, out or run_dir / "figures",
                               f"How run {run_dir.name}'s tokenizer cuts the text")
    else:
        loaded = figures.as_run(path)
        out = out or Path(loaded.run_dir) / "figures"
        prompt = args.prompt or figures.default_prompt(loaded)
        if kind == "qkv":
            paths = figures.qkv_walkthrough(loaded, prompt, args.layer, args.head, out)
        elif kind == "attention":
            paths = figures.attention_grid(loaded, prompt, out)
        elif kind == "sampling":
            paths = figures.sampling(loaded, prompt, out, _temperatures(args.temperatures), args.top_k, args.top_p)
        else:
            paths = figures.render_all(loaded, out, prompt, args.layer, args.head, say=print)
    for p in paths:
        print(p)
    return 0
