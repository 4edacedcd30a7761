"""Our models as Hugging Face `transformers` checkpoints, and GPT-2 checkpoints as our runs.

Export (`export_hf`) writes a folder that `AutoModelForCausalLM.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)` load offline:

    model.safetensors        the weights under Hugging Face's names
    config.json              the architecture: GPT2LMHeadModel or LlamaForCausalLM
    generation_config.json   the run's sampling settings
    tokenizer.json, tokenizer_config.json   our BPE with the same ids (tokenizer/export.py)
    README.md                a model card with the run's figures

Which Hugging Face class depends on the block options (model/gpt.py):

    learned positions + LayerNorm + GELU (tanh)            -> GPT2LMHeadModel
    RoPE + RMSNorm + SwiGLU (GQA and biases allowed)      -> LlamaForCausalLM

both pre-norm, without qk-norm or a logit soft-cap. Anything else has no equivalent
there and is refused, naming the option.

The weights are the same numbers under other names; `NAME_MAP` below is the table
(docs/interop.md prints it). Two things are more than a rename:

* GPT-2's `Conv1D` stores its matrix as (in, out), `nn.Linear` as (out, in): transposed.
* Llama keeps q, k, v in three matrices and the SwiGLU gate and up projection in two;
  ours stacks each set by rows (`c_attn` = [q | k | v], `c_fc` = [gate | up]): sliced.
  RoPE needs nothing: ours already uses Llama's layout (rotate_half, inv_freq = base^(-2i/D)).

Import (`import_hf`) goes the other way for GPT-2 checkpoints (and Llama ones exported
by us): config.json, weights (safetensors, or `pytorch_model.bin` through
`torch.load(weights_only=True)`, which refuses pickles that would run code) and the
tokenizer (hf_tokenizer.py) become a run folder, written with the training code's
own functions, so `sample`, `finetune --init-from` and `train --resume` take it.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import build_config, to_dict
from ..errors import ScratchLMError
from ..inference import load_run
from ..model import GPT
from ..model.gpt import GPTConfig
from ..tokenizer import save_tokenizer, tokenizer_hash
from ..tokenizer.bpe import BPETokenizer
from ..tokenizer.export import save_huggingface
from ..train import checkpoint as ckpt
from ..train.optim import make_optimizer
from ..train.run_folder import RunFolder
from .hf_tokenizer import read_hf_tokenizer

NORM_EPS = 1e-5  # our LayerNorm and RMSNorm epsilon (model/norm.py)

# What each Hugging Face class needs of our block options (`GPTConfig` fields).
REQUIRED = {
    "gpt2": {"norm": "layernorm", "mlp": "gelu", "position": "learned", "qk_norm": False, "key_shift": False,
             "tie_embeddings": True, "logit_softcap": 0.0, "norm_position": "pre"},
    "llama": {"norm": "rmsnorm", "mlp": ("swiglu", "relu2"), "position": "rope", "qk_norm": False, "key_shift": False,
              "logit_softcap": 0.0, "norm_position": "pre"},
}
# ReLU² exports exactly as a Llama MLP: with gate_proj = up_proj = W and hidden_act "relu",
# relu(Wx) · Wx = relu(Wx)² (both are Wx² where Wx > 0, and 0 elsewhere).
CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}

# ours -> Hugging Face, per block `{i}`; "T" = transposed (Conv1D), "rows a:b" = a slice of our rows.
NAME_MAP = {
    "gpt2": [
        ("transformer.wte.weight", "transformer.wte.weight", ""),
        ("transformer.wpe.weight", "transformer.wpe.weight", ""),
        ("transformer.h.{i}.ln_1.weight / .bias", "transformer.h.{i}.ln_1.weight / .bias", ""),
        ("transformer.h.{i}.attn.c_attn.weight", "transformer.h.{i}.attn.c_attn.weight", "T"),
        ("transformer.h.{i}.attn.c_attn.bias", "transformer.h.{i}.attn.c_attn.bias", ""),
        ("transformer.h.{i}.attn.c_proj.weight", "transformer.h.{i}.attn.c_proj.weight", "T"),
        ("transformer.h.{i}.ln_2.weight / .bias", "transformer.h.{i}.ln_2.weight / .bias", ""),
        ("transformer.h.{i}.mlp.c_fc.weight", "transformer.h.{i}.mlp.c_fc.weight", "T"),
        ("transformer.h.{i}.mlp.c_proj.weight", "transformer.h.{i}.mlp.c_proj.weight", "T"),
        ("(biases of c_attn, c_proj, c_fc)", "same names", ""),
        ("transformer.ln_f.weight / .bias", "transformer.ln_f.weight / .bias", ""),
        ("lm_head.weight (= wte)", "lm_head.weight (tied, not stored)", ""),
    ],
    "llama": [
        ("transformer.wte.weight", "model.embed_tokens.weight", ""),
        ("transformer.h.{i}.ln_1.weight", "model.layers.{i}.input_layernorm.weight", ""),
        ("transformer.h.{i}.attn.c_attn.weight rows [0, C)", "model.layers.{i}.self_attn.q_proj.weight", "rows"),
        ("transformer.h.{i}.attn.c_attn.weight rows [C, C+K)", "model.layers.{i}.self_attn.k_proj.weight", "rows"),
        ("transformer.h.{i}.attn.c_attn.weight rows [C+K, C+2K)", "model.layers.{i}.self_attn.v_proj.weight",
         "rows"),
        ("transformer.h.{i}.attn.c_proj.weight", "model.layers.{i}.self_attn.o_proj.weight", ""),
        ("transformer.h.{i}.ln_2.weight", "model.layers.{i}.post_attention_layernorm.weight", ""),
        ("transformer.h.{i}.mlp.c_fc.weight rows [0, F)", "model.layers.{i}.mlp.gate_proj.weight", "rows"),
        ("transformer.h.{i}.mlp.c_fc.weight rows [F, 2F)", "model.layers.{i}.mlp.up_proj.weight", "rows"),
        ("transformer.h.{i}.mlp.c_proj.weight", "model.layers.{i}.mlp.down_proj.weight", ""),
        ("(biases, model.bias=true)", "the same slices of .bias (attention_bias, mlp_bias)", "rows"),
        ("transformer.ln_f.weight", "model.norm.weight", ""),
        ("lm_head.weight", "lm_head.weight (absent when tied)", ""),
    ],
}
GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_architecture(mc) -> str:
    """'gpt2' or 'llama' for a model config; a ScratchLMError naming the option that has no equivalent."""
    arch = "llama" if mc.position == "rope" else "gpt2"
    for name, want in REQUIRED[arch].items():
        have = getattr(mc, name)
        if have not in (want if isinstance(want, tuple) else (want,)):
            pos = "RoPE" if arch == "llama" else "learned positions"
            need = " or ".join(f"model.{name}={w!r}" for w in (want if isinstance(want, tuple) else (want,)))
            raise ScratchLMError(f"model.{name}={have!r} has no {CLASSES[arch]} equivalent (with {pos} the export "
                                 f"needs {need}); this model cannot be exported to Hugging Face")
    if arch == "gpt2" and mc.n_kv_head not in (0, mc.n_head):
        raise ScratchLMError(f"model.n_kv_head={mc.n_kv_head} (grouped-query attention) has no "
                             "GPT2LMHeadModel equivalent; only RoPE + RMSNorm + SwiGLU models export with it (Llama)")
    return arch


# --------------------------------------------------------------------------- weights


def to_hf_state_dict(model: GPT, arch: str) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face's names (fp32, contiguous, nothing shared)."""
    mc = model.config
    sd = {k: v.float() for k, v in ckpt.plain_state_dict(model).items()}
    out = {}
    if arch == "gpt2":
        for k, v in sd.items():
            out[k] = v.t() if k.endswith(GPT2_CONV1D) else v
        if not mc.bias:  # GPT2LMHeadModel always has biases: zeros change nothing
            for k, v in list(out.items()):
                if k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                    out[k[: -len("weight")] + "bias"] = torch.zeros_like(v)
                elif k.endswith(GPT2_CONV1D):
                    out[k[: -len("weight")] + "bias"] = torch.zeros(v.shape[1])
    else:
        C, K, F = mc.n_embd, mc.kv_heads() * (mc.n_embd // mc.n_head), mc.ff_width()
        out["model.embed_tokens.weight"] = sd.pop("transformer.wte.weight")
        out["model.norm.weight"] = sd.pop("transformer.ln_f.weight")
        if "lm_head.weight" in sd:  # untied (model.tie_embeddings = false)
            out["lm_head.weight"] = sd.pop("lm_head.weight")
        for i in range(mc.n_layer):
            p, q = f"transformer.h.{i}.", f"model.layers.{i}."
            out[q + "input_layernorm.weight"] = sd.pop(p + "ln_1.weight")
            out[q + "post_attention_layernorm.weight"] = sd.pop(p + "ln_2.weight")
            for kind in ("weight", "bias") if mc.bias else ("weight",):
                qkv = sd.pop(p + f"attn.c_attn.{kind}")
                out[q + f"self_attn.q_proj.{kind}"] = qkv[:C]
                out[q + f"self_attn.k_proj.{kind}"] = qkv[C: C + K]
                out[q + f"self_attn.v_proj.{kind}"] = qkv[C + K:]
                out[q + f"self_attn.o_proj.{kind}"] = sd.pop(p + f"attn.c_proj.{kind}")
                gate_up = sd.pop(p + f"mlp.c_fc.{kind}")
                if mc.mlp == "relu2":  # one matrix, as both gate and up (see REQUIRED)
                    gate_up = torch.cat([gate_up, gate_up])
                out[q + f"mlp.gate_proj.{kind}"], out[q + f"mlp.up_proj.{kind}"] = gate_up[:F], gate_up[F:]
                out[q + f"mlp.down_proj.{kind}"] = sd.pop(p + f"mlp.c_proj.{kind}")
        if sd:  # a tensor this table does not know: better refuse than drop it silently
            raise ScratchLMError(f"no Llama name for {sorted(sd)[0]}; this model cannot be exported")
    return {k: v.contiguous().clone() for k, v in out.items()}


def from_hf_gpt2(hf_sd: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """A GPT2LMHeadModel (or GPT2Model) state dict under our names; lm_head must be the tied wte."""
    sd = {}
    for k, v in hf_sd.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):  # old checkpoints store the causal mask as a buffer
            continue
        if not k.startswith(("transformer.", "lm_head.")):  # saved from GPT2Model: no prefix
            k = "transformer." + k
        sd[k] = v.t() if k.endswith(GPT2_CONV1D) and v.dim() == 2 else v
    head = sd.pop("lm_head.weight", None)
    wte = sd.get("transformer.wte.weight")
    if head is not None and wte is not None and (head.shape != wte.shape or not torch.equal(head, wte)):
        raise ScratchLMError(f"{where}: lm_head.weight is not tied to transformer.wte.weight; scratchlm's GPT-2 "
                             "ties them (tie_word_embeddings=false is not supported)")
    return sd


def from_hf_llama(hf_sd: dict[str, torch.Tensor], mc, where: str) -> dict[str, torch.Tensor]:
    """A LlamaForCausalLM state dict under our names (the inverse of `to_hf_state_dict`)."""
    sd = dict(hf_sd)
    missing = []

    def take(name):
        if name not in sd:
            missing.append(name)
            return torch.zeros(0)
        return sd.pop(name)

    out = {"transformer.wte.weight": take("model.embed_tokens.weight"),
           "transformer.ln_f.weight": take("model.norm.weight")}
    head = sd.pop("lm_head.weight", None)
    if head is not None and not mc.tie_embeddings:
        out["lm_head.weight"] = head
    elif head is not None and not torch.equal(head, out["transformer.wte.weight"]):
        raise ScratchLMError(f"{where}: tie_word_embeddings is true but lm_head.weight differs from the embedding")
    for i in range(mc.n_layer):
        p, q = f"transformer.h.{i}.", f"model.layers.{i}."
        out[p + "ln_1.weight"] = take(q + "input_layernorm.weight")
        out[p + "ln_2.weight"] = take(q + "post_attention_layernorm.weight")
        for kind in ("weight", "bias") if mc.bias else ("weight",):
            parts = [take(q + f"self_attn.{n}_proj.{kind}") for n in "qkv"]
            out[p + f"attn.c_attn.{kind}"] = torch.cat(parts)
            out[p + f"attn.c_proj.{kind}"] = take(q + f"self_attn.o_proj.{kind}")
            gate, up = (take(q + f"mlp.{n}_proj.{kind}") for n in ("gate", "up"))
            if mc.mlp == "relu2" and not (gate.shape == up.shape and torch.equal(gate, up)):
                raise ScratchLMError(f"{where}: layer {i} has hidden_act relu with gate_proj ≠ up_proj (a ReLU-gated "
                                     "MLP), which scratchlm has no block for; ReLU² exports have gate = up")
            out[p + f"mlp.c_fc.{kind}"] = gate if mc.mlp == "relu2" else torch.cat([gate, up])
            out[p + f"mlp.c_proj.{kind}"] = take(q + f"mlp.down_proj.{kind}")
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}  # a buffer some versions save
    if missing:
        raise ScratchLMError(f"{where}: tensor {missing[0]} is missing ({len(missing)} missing in all)")
    if sd:
        raise ScratchLMError(f"{where}: unexpected tensor {sorted(sd)[0]} ({len(sd)} not used in all)")
    return out


# --------------------------------------------------------------------------- export


def hf_config(mc, arch: str, tok: BPETokenizer, dtype: str = "float32") -> dict:
    """config.json for the Hugging Face class (written by hand: readable, and no transformers needed)."""
    eos = next(iter(tok.special_tokens.values()), None)
    common = {"vocab_size": mc.vocab_size, "bos_token_id": eos, "eos_token_id": eos, "torch_dtype": dtype,
              "use_cache": True, "initializer_range": 0.02}
    if arch == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **common,
                "n_positions": mc.block_size, "n_ctx": mc.block_size, "n_embd": mc.n_embd, "n_layer": mc.n_layer,
                "n_head": mc.n_head, "n_inner": mc.ff_width(), "activation_function": "gelu_new",
                "resid_pdrop": mc.dropout, "embd_pdrop": mc.dropout, "attn_pdrop": mc.dropout,
                "layer_norm_epsilon": NORM_EPS, "scale_attn_weights": True, "tie_word_embeddings": True}
    theta = float(mc.rope_base)
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common,
            "hidden_size": mc.n_embd, "intermediate_size": mc.ff_width(), "num_hidden_layers": mc.n_layer,
            "num_attention_heads": mc.n_head, "num_key_value_heads": mc.kv_heads(),
            "head_dim": mc.n_embd // mc.n_head, "max_position_embeddings": mc.block_size,
            "hidden_act": "relu" if mc.mlp == "relu2" else "silu",
            "rms_norm_eps": NORM_EPS, "rope_theta": theta,  # older transformers read this, newer the next
            "rope_parameters": {"rope_type": "default", "rope_theta": theta},
            "rope_scaling": None, "attention_bias": bool(mc.bias), "mlp_bias": bool(mc.bias),
            "attention_dropout": mc.dropout, "pretraining_tp": 1,
            "tie_word_embeddings": bool(mc.tie_embeddings)}


# A run fine-tuned by `scratchlm finetune` (finetune/data.py) talks in this template:
#   [system + blank line +] <|user|>question<|end|><|assistant|>answer<|end|> ...
# written here as the Jinja template transformers' `apply_chat_template` runs.
CHAT_TOKENS = ("<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{%- set system = messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | list -%}"
    "{%- for m in messages | rejectattr('role', 'equalto', 'system') -%}"
    "{%- if m['role'] == 'user' -%}<|user|>{%- else -%}<|assistant|>{%- endif -%}"
    "{%- if loop.first and system -%}{{ (system + [m['content']]) | join('\n\n') }}"
    "{%- else -%}{{ m['content'] }}{%- endif -%}<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def is_chat_run(run) -> bool:
    """Fine-tuned for chat: the run folder has chat_template.json and the tokenizer the chat tokens."""
    specials = getattr(run.tokenizer, "special_tokens", {})
    return (Path(run.run_dir) / "chat_template.json").exists() and all(t in specials for t in CHAT_TOKENS)


def generation_config(cfg, tok: BPETokenizer, chat: bool = False) -> dict:
    """The run's [sample] settings, in generate()'s words (top_k 0 = off in both).
    A chat model stops at <|end|>, the token that closes its turn."""
    sc, first = cfg.sample, next(iter(tok.special_tokens.values()), None)
    eos = [tok.special_tokens["<|end|>"], first] if chat else first
    greedy = sc.temperature == 0
    gen = {"bos_token_id": first, "eos_token_id": eos, "max_new_tokens": sc.max_new_tokens, "do_sample": not greedy}
    if not greedy:
        gen.update(temperature=sc.temperature, top_k=sc.top_k, top_p=sc.top_p)
    return gen


def run_figures(run) -> dict:
    """Figures for the model card: parameters, training step and the validation loss / bpb."""
    model = run.model
    state = json.loads((Path(run.checkpoint) / ckpt.STATE_FILE).read_text())
    figs = {"parameters": sum(p.numel() for p in model.parameters()), "step": state.get("step"),
            "checkpoint": Path(run.checkpoint).name}
    if state.get("imported_from"):
        figs["imported_from"] = state["imported_from"]
    best = state.get("best_val")
    if isinstance(best, (int, float)) and math.isfinite(best):
        figs["best_val_loss"] = best
    metrics = Path(run.run_dir) / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(rec, dict) and "val_loss" in rec and rec.get("step", 0) <= (state.get("step") or 0):
                figs.update(val_loss=rec["val_loss"], val_bpb=rec.get("val_bpb"), val_step=rec.get("step"))
    return figs


def model_card(run, arch: str, figs: dict, folder_name: str) -> str:
    mc = run.config.model
    rows = [("architecture", f"{CLASSES[arch]} ({mc.n_layer} layers, {mc.n_head} heads, width {mc.n_embd})"),
            ("parameters", f"{figs['parameters']:,}"), ("context", f"{mc.block_size} tokens"),
            ("vocabulary", f"{mc.vocab_size} (byte-level BPE)"),
            ("training steps", f"{figs['step']} (checkpoint {figs['checkpoint']})"),
            ("corpus", run.config.data.path or "the built-in Shakespeare plays")]
    origin = "trained from scratch with scratchlm"
    if "imported_from" in figs:  # a step-0 checkpoint made by `scratchlm import`
        origin = f"imported into scratchlm from {figs['imported_from']}"
        rows[4:] = [("training steps", f"{figs['step']} in scratchlm (checkpoint {figs['checkpoint']})")]
    if "val_loss" in figs:
        bpb = f", {figs['val_bpb']:.4f} bits per byte" if figs.get("val_bpb") is not None else ""
        rows.append(("validation loss", f"{figs['val_loss']:.4f} nats/token{bpb} (step {figs['val_step']})"))
    if "best_val_loss" in figs:
        rows.append(("best validation loss", f"{figs['best_val_loss']:.4f}"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""---
library_name: transformers
tags: [scratchlm, text-generation]
---
# {folder_name}

A language model {origin} and exported by `scratchlm export`.
The weights are the run's own: in fp32 the logits agree with scratchlm's to 1e-4.

| | |
|---|---|
{table}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{folder_name}")
model = AutoModelForCausalLM.from_pretrained("{folder_name}")
ids = tok("ROMEO:", return_tensors="pt").input_ids
print(tok.decode(model.generate(ids, max_new_tokens=50, do_sample=False)[0]))
```
"""


EXPORT_FILES = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "README.md")


def _fresh_folder(out: Path, overwrite: bool) -> None:
    """Make `out` ready for an export. --overwrite replaces an earlier export's files, nothing else."""
    if out.exists() and not out.is_dir():
        raise ScratchLMError(f"--out {out} is a file, not a folder")
    names = sorted(e.name for e in out.iterdir()) if out.is_dir() else []
    if names:
        if not overwrite:
            raise ScratchLMError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
        others = [n for n in names if n not in EXPORT_FILES]
        if others:
            raise ScratchLMError(f"--overwrite: {out} also holds {', '.join(others[:3])}, which an export does not "
                                 "write; move it away or choose another --out")
        for n in names:
            (out / n).unlink()
    out.mkdir(parents=True, exist_ok=True)


def export_hf(run_path: str | Path, out: str | Path, *, dtype: str = "fp32", overwrite: bool = False) -> Path:
    """Write the run's model and tokenizer as a Hugging Face folder; returns it."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ScratchLMError(f"--dtype {dtype!r}: choose fp32, bf16 or fp16")
    run = load_run(run_path)
    arch = hf_architecture(run.config.model)
    tok = run.tokenizer
    if not isinstance(tok, BPETokenizer):
        raise ScratchLMError(f"the run's tokenizer is {getattr(tok, 'type', '?')!r}; Hugging Face export needs the "
                             "byte-level BPE (data.tokenizer = 'bpe')")
    out = Path(out)
    sd = {k: v.to(torch_dtype) for k, v in to_hf_state_dict(run.model, arch).items()}
    _fresh_folder(out, overwrite)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    hf_dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[dtype]
    (out / "config.json").write_text(json.dumps(hf_config(run.config.model, arch, tok, hf_dtype), indent=1))
    chat = is_chat_run(run)
    (out / "generation_config.json").write_text(json.dumps(generation_config(run.config, tok, chat), indent=1))
    save_huggingface(tok, out)
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8"))
    tc["model_max_length"] = run.config.model.block_size  # the longest input the model takes
    if chat:
        tc["chat_template"] = CHAT_TEMPLATE
    tc_path.write_text(json.dumps(tc, indent=1), encoding="utf-8")
    (out / "README.md").write_text(model_card(run, arch, run_figures(run), out.name), encoding="utf-8")
    return out


# --------------------------------------------------------------------------- import


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A Hugging Face folder's tensors: safetensors (single or sharded), else pytorch_model.bin (weights only)."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    pickled = folder / "pytorch_model.bin"
    try:
        if single.exists():
            return load_file(str(single))
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            sd = {}
            for shard in shards:
                sd.update(load_file(str(folder / shard)))
            return sd
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise ScratchLMError(f"{folder}: the safetensors weights cannot be read ({str(e).splitlines()[0]})") from None
    if pickled.exists():
        try:
            # weights_only=True: tensors and plain containers only; a pickle that would
            # construct other objects (and so could run code) is refused, not executed
            sd = torch.load(pickled, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError:
            raise ScratchLMError(f"{pickled} holds objects other than tensors (it could run code if loaded); "
                                 "refusing it. Convert it to safetensors with a tool you trust") from None
        except (RuntimeError, EOFError, OSError) as e:
            raise ScratchLMError(f"{pickled} cannot be read ({str(e).splitlines()[0]})") from None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise ScratchLMError(f"{pickled} is not a state dict (name -> tensor)")
        return sd
    raise ScratchLMError(f"{folder} holds no weights (model.safetensors or pytorch_model.bin)")


def _require(ok: bool, where: str, key: str, value, why: str) -> None:
    if not ok:
        raise ScratchLMError(f"{where}: {key}={value!r} is not supported ({why})")


def model_config_from_hf(hf: dict, vocab_size: int, where: str) -> GPTConfig:
    """Our GPTConfig for a GPT-2 or Llama config.json, refusing settings we cannot reproduce."""
    kind = hf.get("model_type")
    if kind == "gpt2":
        C = hf.get("n_embd", 768)
        act = hf.get("activation_function", "gelu_new")
        _require(act in ("gelu_new", "gelu_pytorch_tanh"), where, "activation_function", act, "ours is GELU, tanh form")
        eps = hf.get("layer_norm_epsilon", 1e-5)
        _require(abs(eps - NORM_EPS) < 1e-12, where, "layer_norm_epsilon", eps, f"ours is {NORM_EPS}")
        for key in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
            _require(not hf.get(key), where, key, hf.get(key), "GPT-2 as published has it off")
        _require(hf.get("scale_attn_weights", True), where, "scale_attn_weights", False, "ours scales by 1/√d")
        _require(hf.get("tie_word_embeddings", True), where, "tie_word_embeddings", False, "ours are tied")
        return GPTConfig(vocab_size=vocab_size, block_size=hf.get("n_positions", 1024), n_layer=hf.get("n_layer", 12),
                         n_head=hf.get("n_head", 12), n_embd=C, bias=True,
                         ff_dim=0 if hf.get("n_inner") in (None, 4 * C) else hf["n_inner"])
    if kind == "llama":
        eps = hf.get("rms_norm_eps", 1e-6)
        _require(abs(eps - NORM_EPS) < 1e-12, where, "rms_norm_eps", eps, f"ours is {NORM_EPS}")
        act = hf.get("hidden_act", "silu")
        _require(act in ("silu", "relu"), where, "hidden_act", act, "ours is SwiGLU, or ReLU² as relu with gate = up")
        _require(not hf.get("rope_scaling"), where, "rope_scaling", hf.get("rope_scaling"), "plain RoPE only")
        rope = hf.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", "default")
        _require(rope_type == "default", where, "rope_type", rope_type, "plain RoPE only")
        bias = bool(hf.get("attention_bias", False))
        _require(bool(hf.get("mlp_bias", False)) == bias, where, "mlp_bias", hf.get("mlp_bias"),
                 "ours has biases everywhere or nowhere (like attention_bias)")
        C, H = hf["hidden_size"], hf["num_attention_heads"]
        kv = hf.get("num_key_value_heads", H)
        _require(hf.get("head_dim", C // H) == C // H, where, "head_dim", hf.get("head_dim"), "ours is width / heads")
        mc = GPTConfig(vocab_size=vocab_size, block_size=hf.get("max_position_embeddings", 2048),
                       n_layer=hf["num_hidden_layers"], n_head=H, n_embd=C, bias=bias, norm="rmsnorm",
                       mlp="relu2" if act == "relu" else "swiglu",
                       position="rope", n_kv_head=0 if kv == H else kv,  # 0: one K/V head per query head
                       rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
                       tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
        if mc.ff_width() != hf["intermediate_size"]:  # not our default SwiGLU width: say it
            mc.ff_dim = hf["intermediate_size"]
        return mc
    arch = (hf.get("architectures") or ["?"])[0]
    raise ScratchLMError(f"{where}: model_type {kind!r} ({arch}) is not one scratchlm can import; "
                         "it imports GPT-2 (GPT2LMHeadModel) and Llama (LlamaForCausalLM) checkpoints")


def import_hf(src: str | Path, out: str | Path, *, overrides: list[str] | None = None, overwrite: bool = False,
              say=lambda m: None) -> Path:
    """Turn a local Hugging Face GPT-2 (or Llama) checkpoint folder into a scratchlm run folder; returns it.

    `overrides` ('section.key=value', e.g. 'data.path=corpus.txt', 'train.lr=3e-4') set the run's
    training settings, which a later `train --resume` keeps; the model's come from the checkpoint."""
    src, out = Path(src), Path(out)
    for item in overrides or []:
        if item.startswith("model."):
            raise ScratchLMError(f"--{item.partition('=')[0]}: the model's shape comes from the checkpoint")
    if not src.is_dir():
        raise ScratchLMError(f"{src} is not a folder (give the folder that holds config.json and the weights)")
    cfg_path = src / "config.json"
    if not cfg_path.exists():
        raise ScratchLMError(f"{src} is not a Hugging Face checkpoint folder (no config.json)")
    try:
        hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScratchLMError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ScratchLMError(f"{cfg_path} is not a JSON object")
    if {"model", "train"} <= hf.keys():
        raise ScratchLMError(f"{src} is a scratchlm run, not a Hugging Face checkpoint; use it as it is")
    converted = read_hf_tokenizer(src)
    tok = converted.tokenizer
    where = str(src)
    mc = model_config_from_hf(hf, tok.vocab_size, str(cfg_path))
    hf_sd = read_weights(src)
    sd = from_hf_gpt2(hf_sd, where) if hf["model_type"] == "gpt2" else from_hf_llama(hf_sd, mc, where)
    # The embedding rows follow the Hugging Face ids; ours number the tokens as the converted
    # tokenizer does (`converted.ids`), so the rows move with them. Rows past the tokenizer's
    # vocabulary (a padded embedding) belong to no token and are dropped.
    rows = [k for k in ("transformer.wte.weight", "lm_head.weight") if k in sd]
    for k in rows:
        n_model = sd[k].shape[0] if sd[k].dim() == 2 else 0
        if n_model < tok.vocab_size:
            raise ScratchLMError(f"{where}: {k} has {n_model} rows but the tokenizer has {tok.vocab_size} tokens")
        if n_model > tok.vocab_size:
            say(f"note: dropping {n_model - tok.vocab_size} embedding rows past the tokenizer's "
                f"{tok.vocab_size} tokens")
        order = torch.empty(tok.vocab_size, dtype=torch.long)
        order[torch.tensor(converted.ids)] = torch.arange(tok.vocab_size)  # our id -> Hugging Face id
        sd[k] = sd[k][order].contiguous()
    if not converted.identity:
        say("note: the tokenizer numbers its tokens differently from scratchlm (bytes 0-255, then merges); "
            "ids are renumbered and the embedding rows moved with them")
    model = GPT(mc)
    sd = {k: v.float().contiguous() for k, v in sd.items()}
    ckpt.load_model_weights(model, sd, where)  # missing / unexpected / wrong-shape tensors: one line
    if tok.vocab_size != mc.vocab_size:  # pragma: no cover - mc takes the tokenizer's size
        raise ScratchLMError(f"{where}: vocabulary sizes disagree")
    data = {"tokenizer": "bpe", "vocab_size": tok.vocab_size, "pattern": tok.pattern_name or tok.pattern}
    cfg = build_config(base={"model": asdict(mc), "data": data}, overrides=overrides)
    write_run(out, model, tok, cfg, overwrite, source=str(src.resolve()))
    return out


def write_run(out: Path, model: GPT, tok, cfg, overwrite: bool = False, source: str = "") -> None:
    """A run folder as training writes it: marker, config.json, tokenizer.json and a step-0 checkpoint
    (with a fresh optimizer state, so `train --resume` starts from these weights). The folder is
    claimed as training claims it: `overwrite` replaces only a run, and a failure removes what was written."""
    folder = RunFolder(out)
    folder.claim(resume=False, overwrite=overwrite)
    try:
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
        save_tokenizer(tok, out / "tokenizer.json")
        tc = cfg.train
        optimizer, _ = make_optimizer(model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2), "cpu")
        state = {"step": 0, "best_val": float("inf"), "warmup_end_progress": 0.0, "train_time": 0.0, "guard": {},
                 "config": to_dict(cfg), "tokenizer_hash": tokenizer_hash(tok),
                 "data_position": {"step": 0, "skip": 0}, "imported_from": source}
        ckpt.save_checkpoint(out / "checkpoints" / "step_0000000", ckpt.plain_state_dict(model),
                             optimizer.state_dict(), state)
    except BaseException:
        folder.abandon()
        raise
    finally:
        folder.release()
