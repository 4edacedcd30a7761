"""`scratchlm export`: write a run as a Hugging Face folder (transformers) or a GGUF file (llama.cpp)."""

from __future__ import annotations

import argparse

from ..interop.gguf import export_gguf
from ..interop.hf import export_hf
from .common import no_extra_args

NAME = "export"
HELP = "export a run for Hugging Face transformers (--format hf) or llama.cpp (--format gguf)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help=HELP, allow_abbrev=False, description=(
        "hf: a folder AutoModelForCausalLM / AutoTokenizer.from_pretrained load (GPT2LMHeadModel for GPT-2-like "
        "runs, LlamaForCausalLM for RoPE + RMSNorm + SwiGLU runs). gguf: one .gguf file for llama.cpp."))
    p.add_argument("run_dir", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--format", choices=["hf", "gguf"], default="hf")
    p.add_argument("--out", required=True, help="hf: a folder; gguf: a folder (model.gguf in it) or FILE.gguf")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="weights' precision (gguf: fp32 or fp16); fp32 reproduces our logits exactly")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.set_defaults(run=run)
    return p


def run(args, rest: list[str]) -> int:
    no_extra_args(rest)
    export = export_hf if args.format == "hf" else export_gguf
    path = export(args.run_dir, args.out, dtype=args.dtype, overwrite=args.overwrite)
    print(f"wrote {path}")
    if args.format == "hf":
        print(f"load it with AutoModelForCausalLM.from_pretrained({str(path)!r}) (and AutoTokenizer)")
    return 0
