"""Load a trained model from a run folder or checkpoint and sample text from it."""

from __future__ import annotations

import codecs
import sys
from pathlib import Path

import torch

from .config import SampleConfig, build_config, validate_sample
from .errors import ScratchLMError
from .generate import generate_tokens
from .model import GPT
from .tokenizer import load_tokenizer, tokenizer_hash
from .train import checkpoint as ckpt


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(checkpoint folder, run folder) for a run folder (best/, else newest good) or a checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise ScratchLMError(f"{path} does not exist")
    if (path / ckpt.MANIFEST).exists() or (path / ckpt.MODEL_FILE).exists():
        return path, path.parent.parent
    ckdir = path / "checkpoints"
    if not ckdir.is_dir():
        raise ScratchLMError(f"{path} is neither a run folder (no checkpoints/) nor a checkpoint folder")
    if (ckdir / "best" / ckpt.MANIFEST).exists():
        return ckdir / "best", path
    latest = ckpt.latest_good_checkpoint(ckdir, warn=lambda m: print(m, file=sys.stderr))
    if latest is None:
        raise ScratchLMError(f"{path} holds no complete checkpoint yet")
    return latest, path


def load_model(path: str | Path, device: str = "cpu"):
    """(model, tokenizer, config) from a run folder or checkpoint folder."""
    folder, run_dir = resolve_checkpoint(path)
    state, model_sd, _ = ckpt.load_checkpoint(folder, with_trainer=False)
    cfg = build_config(base=state["config"])
    tok_path = run_dir / "tokenizer.json"
    tok = load_tokenizer(tok_path)
    if tokenizer_hash(tok) != state.get("tokenizer_hash"):
        raise ScratchLMError(f"{tok_path} is not the tokenizer checkpoint {folder} was trained with (hash mismatch)")
    if tok.vocab_size != cfg.model.vocab_size:
        raise ScratchLMError(f"tokenizer vocabulary ({tok.vocab_size}) does not match the checkpoint's ({cfg.model.vocab_size})")
    model = GPT(cfg.model)
    ckpt.load_model_weights(model, model_sd, str(folder))
    return model.to(device).eval(), tok, cfg


class TextStream:
    """Turns token ids into text as they arrive without splitting a UTF-8 character
    (a byte-level token may end halfway through one)."""

    def __init__(self, tok):
        self.tok = tok
        self.bytes_mode = hasattr(tok, "decode_bytes")
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids) -> str:
        if self.bytes_mode:
            return self.decoder.decode(self.tok.decode_bytes(list(ids)))
        return self.tok.decode(list(ids))

    def flush(self) -> str:
        return self.decoder.decode(b"", final=True) if self.bytes_mode else ""


def encode_prompt(tok, prompt: str, block_size: int, warn=lambda m: print(m, file=sys.stderr)) -> list[int]:
    ids = tok.encode(prompt) if prompt else []
    if not ids:
        ids = tok.encode("\n")
    if len(ids) > block_size:
        warn(f"note: the prompt is {len(ids)} tokens, longer than the context ({block_size}); keeping its last {block_size}")
        ids = ids[-block_size:]
    return ids


def sample_text(model, tok, sc: SampleConfig, out=None, sep: str = "-" * 60) -> list[str]:
    """Generate `sc.num_samples` texts from one seeded generator (same seed, same texts);
    stream each to `out` (a file object) as it is generated, if given."""
    validate_sample(sc)
    device = next(model.parameters()).device
    ids = encode_prompt(tok, sc.prompt, model.config.block_size)
    gen = torch.Generator(device=device).manual_seed(sc.seed)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[sc.dtype]
    texts = []
    for _ in range(sc.num_samples):
        stream = TextStream(tok)
        pieces = [sc.prompt]
        if out:
            out.write(f"{sep}\n{sc.prompt}")
        idx = torch.tensor([ids], device=device)
        for nxt in generate_tokens(model, idx, sc.max_new_tokens, sc.temperature, sc.top_k, sc.top_p, gen, dtype=dtype):
            piece = stream.feed(nxt[0].tolist())
            pieces.append(piece)
            if out and piece:
                out.write(piece)
                out.flush()
        pieces.append(stream.flush())
        if out:
            out.write(pieces[-1] + "\n")
        texts.append("".join(pieces))
    if out:
        out.write(sep + "\n")
    return texts


def sample_cli(args) -> int:
    model, tok, cfg = load_model(args.path)
    sc = cfg.sample
    for key in ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "num_samples", "dtype"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(sc, key, value)
    sample_text(model, tok, sc, out=sys.stdout)
    return 0
