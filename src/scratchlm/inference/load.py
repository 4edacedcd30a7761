"""One way to load a run: a run folder or a checkpoint folder becomes a model, its tokenizer and its config.

Every tool that reads a trained model (`sample`, `chat`, `viz`, `report`, `export`,
fine-tuning) comes through `load_run`, so they all find the same checkpoint and make the
same checks: the tokenizer on disk is the one the checkpoint was trained with, and its
vocabulary matches the model's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig, build_config
from ..errors import ScratchLMError
from ..model import GPT
from ..tokenizer import load_tokenizer, tokenizer_hash
from ..train import checkpoint as ckpt


@dataclass
class Run:
    """A trained model ready to use: `model` (in eval mode; `model(ids)` returns `(logits, loss)`),
    `tokenizer`, `config` (the run's RunConfig), `run_dir` and the `checkpoint` folder it came from."""

    model: GPT
    tokenizer: object
    config: RunConfig
    run_dir: Path
    checkpoint: Path


def resolve_checkpoint(path: str | Path, warn=lambda m: print(m, file=sys.stderr)) -> tuple[Path, Path]:
    """(checkpoint folder, run folder) for a run folder (best/, else, with a warning, the newest
    good checkpoint) or a checkpoint folder."""
    return ckpt.find_checkpoint(path, warn=warn)


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Load the model, tokenizer and config of a run folder or checkpoint folder."""
    folder, run_dir = resolve_checkpoint(path)
    state, model_sd, _ = ckpt.load_checkpoint(folder, with_trainer=False)
    cfg = build_config(base=state["config"])
    tok_path = run_dir / "tokenizer.json"
    tok = load_tokenizer(tok_path)
    if tokenizer_hash(tok) != state.get("tokenizer_hash"):
        raise ScratchLMError(f"{tok_path} is not the tokenizer checkpoint {folder} was trained with (hash mismatch)")
    if tok.vocab_size != cfg.model.vocab_size:
        raise ScratchLMError(
            f"tokenizer vocabulary ({tok.vocab_size}) does not match the checkpoint's ({cfg.model.vocab_size})"
        )
    model = GPT(cfg.model)
    ckpt.load_model_weights(model, model_sd, str(folder))
    return Run(model.to(device).eval(), tok, cfg, run_dir, folder)
