"""A run as one GGUF file, the format llama.cpp (and ollama, LM Studio, ...) loads.

GGUF is a single file: key/value metadata (architecture sizes, the tokenizer's tokens
and merges) followed by named tensors. It is written with the `gguf` package from the
llama.cpp project, under llama.cpp's own architecture and tensor names:

    GPT-2-like (learned positions, LayerNorm, GELU)  ->  arch "gpt2"
    Llama-like (RoPE, RMSNorm, SwiGLU)               ->  arch "llama"

The same models as the Hugging Face export (hf.py decides which, and refuses the
rest). Tensors keep our `nn.Linear` layout (out, in), which is what llama.cpp expects.
One real change: llama.cpp's "llama" rotates *interleaved* pairs of q/k dimensions,
where ours (and Hugging Face's) rotates the two halves; llama.cpp's own converter
reorders the rows of q and k for that, and so does `_interleave` here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ScratchLMError
from ..inference import load_run
from ..tokenizer.bpe import BPETokenizer
from ..tokenizer.bpe_train import bytes_to_unicode
from .hf import NORM_EPS, hf_architecture, is_chat_run, to_hf_state_dict

# llama.cpp's pre-tokenizer names for our split patterns. "llama-bpe" splits as GPT-4's
# cl100k pattern except that it keeps a run of newlines together (\s*[\r\n]+).
PRE_TOKENIZER = {"gpt2": "gpt-2", "gpt4": "llama-bpe"}


def _interleave(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of q (or k) from half-split RoPE order to llama.cpp's interleaved pairs, per head:
    [x0 .. x(D/2-1), y0 .. y(D/2-1)] -> [x0, y0, x1, y1, ...]."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_tensors(model, arch: str) -> dict[str, torch.Tensor]:
    """Our weights under llama.cpp's names, (out, in) layout."""
    mc = model.config
    hf = to_hf_state_dict(model, arch)  # names we already map, biases filled in where GPT-2 needs them
    out = {}
    if arch == "gpt2":
        out["token_embd.weight"] = hf["transformer.wte.weight"]
        out["position_embd.weight"] = hf["transformer.wpe.weight"]
        out["output_norm.weight"], out["output_norm.bias"] = hf["transformer.ln_f.weight"], hf["transformer.ln_f.bias"]
        out["output.weight"] = hf["transformer.wte.weight"]  # tied: llama.cpp's gpt2 reads its own copy
        parts = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
                 "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
        for i in range(mc.n_layer):
            for ours, theirs in parts.items():
                for kind in ("weight", "bias"):
                    w = hf[f"transformer.h.{i}.{ours}.{kind}"]
                    # hf holds Conv1D (in, out) matrices: back to (out, in)
                    out[f"blk.{i}.{theirs}.{kind}"] = w.t() if kind == "weight" and w.dim() == 2 else w
        return out
    n_kv = mc.kv_heads()
    out["token_embd.weight"] = hf["model.embed_tokens.weight"]
    out["output_norm.weight"] = hf["model.norm.weight"]
    if "lm_head.weight" in hf:
        out["output.weight"] = hf["lm_head.weight"]
    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(mc.n_layer):
        for ours, theirs in parts.items():
            for kind in ("weight", "bias"):
                w = hf.get(f"model.layers.{i}.{ours}.{kind}")
                if w is None:
                    continue
                if theirs in ("attn_q", "attn_k"):
                    w = _interleave(w, mc.n_head if theirs == "attn_q" else n_kv)
                out[f"blk.{i}.{theirs}.{kind}"] = w
    return out


def export_gguf(run_path: str | Path, out: str | Path, *, dtype: str = "fp32", overwrite: bool = False) -> Path:
    """Write the run as a GGUF file (fp32, or fp16 matrices with fp32 norms and biases); returns its path.
    `out` may be a folder (the file is then `model.gguf` in it) or a path ending in .gguf."""
    import gguf  # the llama.cpp project's package, needed only here

    if dtype not in ("fp32", "fp16"):
        raise ScratchLMError(f"--dtype {dtype!r}: GGUF export writes fp32 or fp16")
    run = load_run(run_path)
    mc, tok = run.config.model, run.tokenizer
    arch = hf_architecture(mc)
    if mc.mlp == "relu2":  # llama.cpp's llama graph always gates with SiLU; it has no ReLU² MLP
        raise ScratchLMError("model.mlp='relu2' has no llama.cpp (GGUF) equivalent; export it to Hugging Face "
                             "instead (--format hf: a Llama with hidden_act relu and gate = up)")
    if not isinstance(tok, BPETokenizer):
        kind = getattr(tok, "type", "?")
        raise ScratchLMError(f"the run's tokenizer is {kind!r}; GGUF export needs the byte-level BPE")
    pre = PRE_TOKENIZER.get(tok.pattern_name)
    if pre is None:
        raise ScratchLMError("the run's tokenizer splits text with a custom pattern, which llama.cpp has no name "
                             "for; GGUF export supports the gpt2 and gpt4 patterns")
    out = Path(out)
    path = out if out.suffix == ".gguf" else out / "model.gguf"
    if path.exists() and not overwrite:
        raise ScratchLMError(f"{path} already exists; choose another --out or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = gguf_tensors(run.model, arch)

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(Path(run.run_dir).name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "fp32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(mc.block_size)
    w.add_embedding_length(mc.n_embd)
    w.add_feed_forward_length(mc.ff_width())
    w.add_block_count(mc.n_layer)
    w.add_head_count(mc.n_head)
    if arch == "gpt2":
        w.add_layer_norm_eps(NORM_EPS)
    else:
        w.add_head_count_kv(mc.kv_heads())
        w.add_layer_norm_rms_eps(NORM_EPS)
        w.add_rope_freq_base(float(mc.rope_base))
        w.add_rope_dimension_count(mc.n_embd // mc.n_head)
        w.add_vocab_size(mc.vocab_size)
    # the tokenizer: tokens spelled in GPT-2's byte alphabet, as Hugging Face's vocab.json does
    b2u = bytes_to_unicode()
    n_plain = 256 + len(tok.merges)
    names = ["".join(b2u[b] for b in tok.token_bytes(i)) for i in range(n_plain)] + list(tok.special_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(names)
    w.add_token_types([gguf.TokenType.NORMAL] * n_plain + [gguf.TokenType.CONTROL] * len(tok.special_tokens))
    w.add_token_merges([f"{names[a]} {names[b]}" for a, b in tok.merges])
    if tok.special_tokens:
        first = next(iter(tok.special_tokens.values()))
        w.add_bos_token_id(first)
        w.add_eos_token_id(first)
        if is_chat_run(run):  # a fine-tuned chat model ends its turn with <|end|>
            w.add_eot_token_id(tok.special_tokens["<|end|>"])
    w.add_add_bos_token(False)
    for name, t in tensors.items():
        a = t.detach().float().numpy()
        if dtype == "fp16" and a.ndim == 2:  # matrices in fp16; norms and biases stay fp32 (llama.cpp's habit)
            a = a.astype(np.float16)
        w.add_tensor(name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
