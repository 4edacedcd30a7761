"""Hugging Face and GGUF interop, tested against the real libraries (transformers, gguf), offline.

Export: the exported model's logits equal ours to 1e-4 in fp32 on held-out text, and greedy
`generate` gives the tokens our greedy sampling gives, for GPT2LMHeadModel and LlamaForCausalLM.
Import: a randomly initialised GPT2LMHeadModel saved to a folder becomes a run whose logits
equal the original's. GGUF: the file read back with gguf.GGUFReader holds our tensors and sizes.
"""

import json
import math

import numpy as np
import pytest
import torch

from scratchlm.config import build_config
from scratchlm.errors import ScratchLMError
from scratchlm.inference import generate_tokens, load_run
from scratchlm.interop.gguf import export_gguf, gguf_tensors
from scratchlm.interop.hf import NAME_MAP, export_hf, hf_architecture, import_hf, write_run
from scratchlm.model import GPT
from scratchlm.model.gpt import GPTConfig
from scratchlm.model.rope import apply_rope, rope_tables
from scratchlm.tokenizer.bpe import BPETokenizer
from scratchlm.tokenizer.export import save_huggingface

transformers = pytest.importorskip("transformers")

TEXT = (
    "FIRST CITIZEN:\nBefore we proceed any further, hear me speak.\n\nALL:\nSpeak, speak.\n"
    "FIRST CITIZEN:\nYou are all resolved rather to die than to famish?\n\nALL:\nResolved. resolved.\n"
) * 30
HELD_OUT = "MENENIUS:\nWhy, masters, my good friends, mine honest neighbours, will you undo yourselves? 🎉"

GPT2_LIKE = {}
LLAMA_LIKE = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_kv_head": 2, "bias": False,
              "tie_embeddings": False}
ARCHS = {
    "gpt2": (GPT2_LIKE, "GPT2LMHeadModel"),
    "gpt2-nobias-ffdim": ({"bias": False, "ff_dim": 96}, "GPT2LMHeadModel"),
    "llama-gqa-untied": (LLAMA_LIKE, "LlamaForCausalLM"),
    "llama-bias-tied": ({**LLAMA_LIKE, "n_kv_head": 4, "bias": True, "tie_embeddings": True}, "LlamaForCausalLM"),
    # the main job's block: a Llama whose MLP has hidden_act relu and gate_proj = up_proj
    "relu2-as-llama": ({"position": "rope", "norm": "rmsnorm", "mlp": "relu2", "bias": False}, "LlamaForCausalLM"),
}


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TEXT, 320)


def make_run(path, tok, seed=0, **model):
    """A run folder as training writes it (config.json, tokenizer.json, a checkpoint, metrics.jsonl),
    with weights far from their initial values so that every tensor matters to the logits."""
    torch.manual_seed(seed)
    cfg = build_config(base={"model": {"vocab_size": tok.vocab_size, "block_size": 128, "n_layer": 2, "n_head": 4,
                                       "n_embd": 32, **model}})
    m = GPT(cfg.model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    write_run(path, m, tok, cfg)
    (path / "metrics.jsonl").write_text(json.dumps({"event": "eval", "step": 0, "val_loss": 5.4321, "val_bpb": 2.345})
                                        + "\n")
    return path


def hf_load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("name", list(ARCHS))
def test_export_matches_logits_and_greedy_generation(tmp_path, tok, name):
    options, cls = ARCHS[name]
    run = load_run(make_run(tmp_path / "run", tok, **options))
    out = export_hf(tmp_path / "run", tmp_path / "hf")
    for f in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "README.md"):
        assert (out / f).exists(), f
    model, hf_tok = hf_load(out)
    assert type(model).__name__ == cls

    ids = run.tokenizer.encode(HELD_OUT)
    assert hf_tok(HELD_OUT).input_ids == ids  # the tokenizer travels with the same ids
    x = torch.tensor([ids])
    with torch.no_grad():
        ours, _ = run.model(x)
        theirs = model(x).logits
    assert ours.abs().max() > 1.0  # logits far from uniform: the comparison means something
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)

    model.generation_config.eos_token_id = None  # run the full length, as our sampler does
    prompt = x[:, :8]
    hf_greedy = model.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0)[0, 8:].tolist()
    our_greedy = torch.cat(list(generate_tokens(run.model, prompt, 24, temperature=0.0)), dim=1)[0].tolist()
    assert hf_greedy == our_greedy

    card = (out / "README.md").read_text()
    n_params = sum(p.numel() for p in run.model.parameters())
    assert f"{n_params:,}" in card and "5.4321" in card and "2.3450" in card and cls in card


def test_export_bf16_and_generation_config(tmp_path, tok):
    make_run(tmp_path / "run", tok)
    out = export_hf(tmp_path / "run", tmp_path / "hf", dtype="bf16")
    model, _ = hf_load(out)
    assert model.dtype == torch.bfloat16
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["do_sample"] and gen["eos_token_id"] == tok.special_tokens["<|endoftext|>"]
    with pytest.raises(ScratchLMError, match="not empty"):
        export_hf(tmp_path / "run", out)
    export_hf(tmp_path / "run", out, overwrite=True)  # an earlier export is replaced ...
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ScratchLMError, match="notes.txt"):  # ... but nothing else is removed
        export_hf(tmp_path / "run", out, overwrite=True)
    assert (out / "notes.txt").exists() and (out / "model.safetensors").exists()


@pytest.mark.parametrize("options, named", [
    ({"mlp": "relu"}, "model.mlp='relu'"),
    ({"norm": "rmsnorm"}, "model.norm='rmsnorm'"),
    ({"qk_norm": True}, "model.qk_norm"),
    ({"key_shift": True}, "model.key_shift"),
    ({**LLAMA_LIKE, "key_shift": True}, "model.key_shift"),
    ({"logit_softcap": 30.0}, "model.logit_softcap"),
    ({"norm_position": "post"}, "model.norm_position"),
    ({"tie_embeddings": False}, "model.tie_embeddings"),
    ({"n_kv_head": 2}, "model.n_kv_head"),
    ({**LLAMA_LIKE, "mlp": "gelu"}, "model.mlp='gelu'"),
    ({**LLAMA_LIKE, "norm": "layernorm"}, "model.norm='layernorm'"),
])
def test_options_without_a_hugging_face_equivalent_are_refused(options, named):
    cfg = build_config(base={"model": {"n_head": 4, "n_embd": 32, **options}}).model
    with pytest.raises(ScratchLMError) as e:
        hf_architecture(cfg)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_refusal_reaches_the_export_command(tmp_path, tok, capsys):
    cli = pytest.importorskip("scratchlm.cli")
    make_run(tmp_path / "run", tok, mlp="relu2")
    assert cli.main(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.mlp='relu2'" in err
    assert not (tmp_path / "hf").exists()  # nothing written


# ----------------------------------------------------------------------------- import


def random_gpt2(folder, tok, layout="safetensors", seed=0):
    """A randomly initialised GPT2LMHeadModel saved the way Hugging Face saves it, with our tokenizer's files.
    layout: safetensors | sharded (several files and an index) | bin (pytorch_model.bin only) |
    gpt2model (a GPT2Model's names: no `transformer.` prefix, no lm_head)."""
    from safetensors.torch import load_file, save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=48, n_layer=2, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(folder, max_shard_size="40KB" if layout == "sharded" else "5GB")
    if layout == "bin":  # old-style folder: the pickle file only
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, folder / "pytorch_model.bin")
        for f in folder.glob("*.safetensors"):
            f.unlink()
    if layout == "gpt2model":  # as openai-community/gpt2's file: GPT2Model names, plus the old causal-mask buffers
        sd = load_file(str(folder / "model.safetensors"))
        sd = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
        sd.update({f"h.{i}.attn.bias": torch.ones(1, 1, 128, 128).tril() for i in range(2)})
        save_file(sd, str(folder / "model.safetensors"))
    save_huggingface(tok, folder)
    return model


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin", "gpt2model"])
def test_import_random_gpt2_gives_the_same_logits(tmp_path, tok, layout):
    hf_model = random_gpt2(tmp_path / "gpt2", tok, layout)
    if layout == "sharded":
        assert (tmp_path / "gpt2" / "model.safetensors.index.json").exists()
        assert len(list((tmp_path / "gpt2").glob("*.safetensors"))) > 2
    run_dir = import_hf(tmp_path / "gpt2", tmp_path / "run")
    for name in ("config.json", "tokenizer.json"):
        assert (run_dir / name).exists()
    assert (run_dir / "checkpoints" / "step_0000000" / "manifest.json").exists()
    run = load_run(run_dir)
    x = torch.tensor([run.tokenizer.encode(HELD_OUT)])
    with torch.no_grad():
        torch.testing.assert_close(run.model(x)[0], hf_model(x).logits, atol=1e-4, rtol=0)


def imported_run(tmp_path, tok, cli):
    random_gpt2(tmp_path / "gpt2", tok)
    (tmp_path / "text.txt").write_text(TEXT)
    run = tmp_path / "run"
    assert cli.main(["import", "hf", str(tmp_path / "gpt2"), "--out", str(run), "--data", str(tmp_path / "text.txt"),
                     "--train.batch_size", "2", "--train.eval_interval", "2", "--train.eval_tokens", "256",
                     "--train.warmup_steps", "1", "--sample.num_samples", "1", "--sample.max_new_tokens", "5",
                     "--viz.snapshots", "false", "--viz.figures", "false", "--viz.tensorboard", "false"]) == 0
    return run


def test_imported_run_samples_from_the_command_line(tmp_path, tok, capsys):
    cli = pytest.importorskip("scratchlm.cli")
    run = imported_run(tmp_path, tok, cli)
    assert json.loads((run / "config.json").read_text())["train"]["batch_size"] == 2  # the overrides are kept
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--prompt", "ALL:", "--max-new-tokens", "10", "--num-samples", "1"]) == 0
    assert "ALL:" in capsys.readouterr().out
    assert cli.main(["import", "hf", str(tmp_path / "gpt2"), "--out", str(run)]) == 2  # a run is not replaced
    assert "already holds a run" in capsys.readouterr().err
    assert cli.main(["import", "hf", str(tmp_path / "gpt2"), "--out", str(run), "--model.n_layer", "3"]) == 2
    assert "comes from the checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_imported_run_keeps_training_and_fine_tunes(tmp_path, tok):
    """train --resume starts from the imported weights (step 0, a fresh optimizer state); finetune --init-from too."""
    cli = pytest.importorskip("scratchlm.cli")
    run = imported_run(tmp_path, tok, cli)
    assert cli.main(["train", "--resume", str(run), "--max-steps", "2", "--quiet"]) == 0
    assert (run / "checkpoints" / "final" / "manifest.json").exists()
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert evals and evals[-1]["step"] == 2
    # and fine-tuning starts from it
    (tmp_path / "chat.jsonl").write_text('{"prompt": "Who speaks?", "response": "ALL"}\n' * 20)
    assert cli.main(["finetune", "--init-from", str(run), "--data", str(tmp_path / "chat.jsonl"), "--out",
                     str(tmp_path / "sft"), "--max-steps", "2", "--quiet", "--no-doctor", "--train.batch_size", "2",
                     "--train.eval_interval", "2", "--viz.snapshots", "false", "--viz.figures", "false"]) == 0
    assert (tmp_path / "sft" / "checkpoints" / "final" / "manifest.json").exists()


def test_import_with_a_tokenizer_in_another_id_order(tmp_path):
    """A `tokenizers`-trained vocabulary (special token first, its own byte order): ids are renumbered
    and the embedding rows move with them, so the logits are the same up to that renumbering."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=330, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    src = tmp_path / "gpt2"
    src.mkdir()
    t.model.save(str(src))  # vocab.json + merges.txt only
    vocab = json.loads((src / "vocab.json").read_text())
    torch.manual_seed(1)
    hf_model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab) + 6, n_positions=128, n_embd=32, n_layer=1,
                                          n_head=2)).eval()  # 6 padding rows, as nanoGPT's 50304
    hf_model.save_pretrained(src)
    notes = []
    run = load_run(import_hf(src, tmp_path / "run", say=notes.append))
    assert any("renumbered" in n for n in notes) and any("dropping 6" in n for n in notes)
    hf_ids = t.encode(HELD_OUT).ids
    ours_ids = run.tokenizer.encode(HELD_OUT)
    from scratchlm.interop.hf_tokenizer import read_hf_tokenizer

    id_map = read_hf_tokenizer(src).ids
    assert [id_map[i] for i in hf_ids] == ours_ids
    with torch.no_grad():
        theirs = hf_model(torch.tensor([hf_ids])).logits[0, :, : len(vocab)]
        ours = run.model(torch.tensor([ours_ids]))[0][0]
    torch.testing.assert_close(ours[:, id_map], theirs, atol=1e-4, rtol=0)


def test_import_a_llama_saved_by_transformers(tmp_path, tok):
    """LlamaForCausalLM as transformers writes it (GQA, untied head), with our RMSNorm epsilon."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
                      tie_word_embeddings=False)
    hf_model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf_model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    hf_model.save_pretrained(tmp_path / "llama")
    save_huggingface(tok, tmp_path / "llama")
    run = load_run(import_hf(tmp_path / "llama", tmp_path / "run"))
    mc = run.config.model
    assert (mc.position, mc.norm, mc.mlp, mc.n_kv_head, mc.ff_width()) == ("rope", "rmsnorm", "swiglu", 2, 80)
    x = torch.tensor([tok.encode(HELD_OUT)])
    with torch.no_grad():
        torch.testing.assert_close(run.model(x)[0], hf_model(x).logits, atol=1e-4, rtol=0)
    from safetensors.torch import load_file, save_file

    good = load_file(str(tmp_path / "llama" / "model.safetensors"))
    save_file({k: v for k, v in good.items() if k != "model.layers.1.self_attn.k_proj.weight"},
              str(tmp_path / "llama" / "model.safetensors"))
    with pytest.raises(ScratchLMError, match="model.layers.1.self_attn.k_proj.weight is missing"):
        import_hf(tmp_path / "llama", tmp_path / "run2")
    save_file(good, str(tmp_path / "llama" / "model.safetensors"))
    cfg_json = json.loads((tmp_path / "llama" / "config.json").read_text())
    (tmp_path / "llama" / "config.json").write_text(json.dumps({**cfg_json, "rms_norm_eps": 1e-6}))
    with pytest.raises(ScratchLMError, match="rms_norm_eps=1e-06"):
        import_hf(tmp_path / "llama", tmp_path / "run2")


def test_export_refuses_a_char_tokenizer(tmp_path, tok):
    from scratchlm.tokenizer import CharTokenizer

    chars = CharTokenizer.train(TEXT)
    make_run(tmp_path / "run", chars)
    with pytest.raises(ScratchLMError, match="'char'"):
        export_hf(tmp_path / "run", tmp_path / "hf")
    with pytest.raises(ScratchLMError, match="'char'"):
        export_gguf(tmp_path / "run", tmp_path / "m.gguf")


@pytest.mark.parametrize("options", [LLAMA_LIKE, ARCHS["relu2-as-llama"][0]], ids=["swiglu", "relu2"])
def test_export_then_import_round_trip_llama(tmp_path, tok, options):
    run_a = load_run(make_run(tmp_path / "a", tok, **options))
    export_hf(tmp_path / "a", tmp_path / "hf")
    run_b = load_run(import_hf(tmp_path / "hf", tmp_path / "b"))
    assert run_b.config.model == run_a.config.model
    x = torch.tensor([tok.encode(HELD_OUT)])
    with torch.no_grad():
        assert torch.equal(run_a.model(x)[0], run_b.model(x)[0])


# --------------------------------------------------------------------------- bad input


class Evil:  # pickled by reference: unpickling it would have to import and build this class
    def __reduce__(self):
        return (print, ("this would have run",))


def test_bad_import_folders_give_one_line_errors(tmp_path, tok):
    def refused(src, words):
        with pytest.raises(ScratchLMError) as e:
            import_hf(src, tmp_path / "out", overwrite=True)
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)

    refused(tmp_path / "nowhere", "not a folder")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "no config.json")
    make_run(tmp_path / "ours", tok)
    refused(tmp_path / "ours", "scratchlm run")

    src = tmp_path / "gpt2"
    random_gpt2(src, tok)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    refused(src, "'bert' (BertForMaskedLM)")
    (src / "config.json").write_text(json.dumps({**cfg, "activation_function": "relu"}))
    refused(src, "activation_function='relu'")
    (src / "config.json").write_text(json.dumps(cfg))

    from safetensors.torch import load_file, save_file

    good = load_file(str(src / "model.safetensors"))
    save_file({k: v for k, v in good.items() if "h.1.mlp.c_fc.bias" not in k}, str(src / "model.safetensors"))
    refused(src, "missing")
    save_file({**good, "transformer.h.0.mlp.c_fc.weight": torch.zeros(48, 100)}, str(src / "model.safetensors"))
    refused(src, "c_fc.weight")
    save_file({**good, "transformer.extra.weight": torch.zeros(3)}, str(src / "model.safetensors"))
    refused(src, "unexpected")
    (src / "model.safetensors").write_bytes(b"not safetensors at all")
    refused(src, "cannot be read")

    (src / "model.safetensors").unlink()
    refused(src, "holds no weights")
    torch.save({"transformer.wte.weight": torch.zeros(2), "payload": Evil()}, src / "pytorch_model.bin")
    refused(src, "objects other than tensors")
    assert not (tmp_path / "out").exists()  # nothing written for any of them


def test_export_of_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ScratchLMError, match="neither a run folder"):
        export_hf(tmp_path / "nothing", tmp_path / "hf")
    with pytest.raises(ScratchLMError, match="neither a run folder"):
        export_gguf(tmp_path / "nothing", tmp_path / "gg")


# ------------------------------------------------------------------------------- GGUF


def gguf_read(path):
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    return fields, tensors


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa-untied"])
def test_gguf_file_reads_back_with_our_tensors_and_metadata(tmp_path, tok, name):
    options, _ = ARCHS[name]
    run = load_run(make_run(tmp_path / "run", tok, **options))
    path = export_gguf(tmp_path / "run", tmp_path / "gg")
    fields, tensors = gguf_read(path)
    arch = "gpt2" if name == "gpt2" else "llama"
    mc = run.config.model
    assert fields["general.architecture"] == arch
    assert fields[f"{arch}.context_length"] == mc.block_size and fields[f"{arch}.block_count"] == mc.n_layer
    assert fields[f"{arch}.embedding_length"] == mc.n_embd and fields[f"{arch}.attention.head_count"] == mc.n_head
    assert fields[f"{arch}.feed_forward_length"] == mc.ff_width()
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "llama-bpe"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == tok.vocab_size and tokens[-1] == "<|endoftext|>" and tokens[32] == "Ġ"
    assert len(fields["tokenizer.ggml.merges"]) == len(tok.merges)
    assert fields["tokenizer.ggml.eos_token_id"] == tok.special_tokens["<|endoftext|>"]
    # the tokens and merges in the file are exactly our tokenizer (read back as Hugging Face files would be)
    from scratchlm.interop.hf_tokenizer import convert

    merges = [tuple(m.split(" ")) for m in fields["tokenizer.ggml.merges"]]
    back = convert({t: i for i, t in enumerate(tokens)}, merges, {}, tok.pattern, "gguf")
    assert back.identity and back.tokenizer.to_dict(False) == tok.to_dict(False)

    expected = gguf_tensors(run.model, arch)
    assert set(tensors) == set(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(tensors[k], v.numpy(), err_msg=k)
    sd = run.model.state_dict()
    np.testing.assert_array_equal(tensors["token_embd.weight"], sd["transformer.wte.weight"].numpy())
    if arch == "gpt2":  # our Linear layout (out, in) as it is
        np.testing.assert_array_equal(tensors["blk.1.attn_qkv.weight"], sd["transformer.h.1.attn.c_attn.weight"].numpy())
    else:
        assert fields["llama.attention.head_count_kv"] == 2 and fields["llama.rope.freq_base"] == 10000.0
        np.testing.assert_array_equal(tensors["output.weight"], sd["lm_head.weight"].numpy())


def test_gguf_llama_q_k_rows_suit_interleaved_rope(tmp_path, tok):
    """llama.cpp's llama rotates interleaved pairs (x0, x1), (x2, x3), ...; ours rotates the halves. With the
    rows reordered, its attention scores q·k equal ours at every pair of positions."""
    run = load_run(make_run(tmp_path / "run", tok, **LLAMA_LIKE))
    tensors = gguf_tensors(run.model, "llama")
    n_head, n_kv, D, T = 4, 2, 8, 6
    x = torch.randn(T, 32)
    c_attn = run.model.transformer.h[0].attn.c_attn.weight.detach()
    q, k = (x @ c_attn[:32].T).view(T, n_head, D), (x @ c_attn[32:48].T).view(T, n_kv, D)
    cos, sin = rope_tables(T, D, 10000.0)
    q1, k1 = apply_rope(q.transpose(0, 1), cos, sin), apply_rope(k.transpose(0, 1), cos, sin)  # (heads, T, D)
    ours = torch.einsum("htd,hsd->hts", q1, k1.repeat_interleave(2, 0))  # query head h uses kv head h // 2

    def interleaved_rope(v):  # (T, heads, D): pair (2i, 2i+1) turns by pos·base^(-2i/D)
        inv = 1.0 / 10000.0 ** (torch.arange(0, D, 2).float() / D)
        ang = torch.arange(T).float()[:, None] * inv  # (T, D/2)
        a, b = v[..., 0::2], v[..., 1::2]
        c, s = ang.cos()[:, None], ang.sin()[:, None]
        return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)

    q2 = interleaved_rope((x @ torch.from_numpy(np.asarray(tensors["blk.0.attn_q.weight"])).T).view(T, n_head, D))
    k2 = interleaved_rope((x @ torch.from_numpy(np.asarray(tensors["blk.0.attn_k.weight"])).T).view(T, n_kv, D))
    theirs = torch.einsum("thd,shd->hts", q2, k2.repeat_interleave(2, 1))
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_gguf_fp16_and_refusals(tmp_path, tok):
    make_run(tmp_path / "run", tok)
    path = export_gguf(tmp_path / "run", tmp_path / "m.gguf", dtype="fp16")
    assert path == tmp_path / "m.gguf"
    fields, tensors = gguf_read(path)
    assert fields["general.file_type"] == 1
    assert tensors["blk.0.ffn_up.weight"].dtype == np.float16 and tensors["blk.0.ffn_up.bias"].dtype == np.float32
    with pytest.raises(ScratchLMError, match="already exists"):
        export_gguf(tmp_path / "run", path)
    make_run(tmp_path / "soft", tok, logit_softcap=15.0)
    with pytest.raises(ScratchLMError, match="model.logit_softcap"):
        export_gguf(tmp_path / "soft", tmp_path / "soft.gguf")


def test_name_map_covers_every_parameter():
    """The documented table names every kind of tensor each architecture has."""
    for arch, options in (("gpt2", {"bias": True}), ("llama", {**LLAMA_LIKE, "bias": True})):
        cfg = GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=4, n_embd=32, **options)
        names = {k.replace(".0.", ".{i}.") for k in GPT(cfg).state_dict()}
        documented = " ".join(ours for ours, _, _ in NAME_MAP[arch])
        for n in names:
            stem = n.rsplit(".", 1)[0]
            assert stem in documented or "biases" in documented and n.endswith(".bias"), n


def test_fine_tuned_run_exports_its_chat_template(tmp_path, tok):
    """A run from `scratchlm finetune` (chat tokens, chat_template.json): apply_chat_template gives the ids
    our chat code gives, and generation stops at <|end|>."""
    from scratchlm.finetune.data import parse_record, prompt_ids, with_chat_tokens

    chat_tok, _ = with_chat_tokens(tok)
    make_run(tmp_path / "run", chat_tok)
    (tmp_path / "run" / "chat_template.json").write_text("{}")
    out = export_hf(tmp_path / "run", tmp_path / "hf")
    _, hf_tok = hf_load(out)
    record = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who speaks?"},
                           {"role": "assistant", "content": "ALL: Speak, speak."},
                           {"role": "user", "content": "And then? 🎉"}]}
    want = prompt_ids(chat_tok, parse_record(record, "test"))
    got = hf_tok.apply_chat_template(record["messages"], add_generation_prompt=True, tokenize=True)
    got = got["input_ids"] if isinstance(got, dict) or hasattr(got, "keys") else got
    assert list(got) == want
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"][0] == chat_tok.special_tokens["<|end|>"]
    fields, _ = gguf_read(export_gguf(tmp_path / "run", tmp_path / "chat.gguf"))
    assert fields["tokenizer.ggml.eot_token_id"] == chat_tok.special_tokens["<|end|>"]


def llama_cpp_forward(fields, tensors, ids):
    """Logits from a GGUF file's own metadata and tensors, computed the way llama.cpp's gpt2 and llama graphs
    do: y = x·Wᵀ with W as stored ((out, in), ggml's ne = [in, out]), tanh GELU, and for llama RMSNorm, SwiGLU,
    grouped-query attention and RoPE in ggml's "normal" mode, which rotates interleaved pairs (2i, 2i+1)."""
    import torch.nn.functional as F

    W = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
    arch = fields["general.architecture"]
    n_head, n_layer = fields[f"{arch}.attention.head_count"], fields[f"{arch}.block_count"]
    n_kv = fields.get(f"{arch}.attention.head_count_kv", n_head)
    C = fields[f"{arch}.embedding_length"]
    D, T = C // n_head, len(ids)

    def lin(x, name):
        y = x @ W[f"{name}.weight"].T
        return y + W[f"{name}.bias"] if f"{name}.bias" in W else y

    def norm(x, name):
        if arch == "gpt2":
            eps = fields["gpt2.attention.layer_norm_epsilon"]
            return F.layer_norm(x, (C,), W[f"{name}.weight"], W[f"{name}.bias"], eps)
        return F.rms_norm(x, (C,), W[f"{name}.weight"], fields["llama.attention.layer_norm_rms_epsilon"])

    def rope(v):  # (T, heads, D), ggml's normal mode
        inv = fields["llama.rope.freq_base"] ** (-torch.arange(0, D, 2).float() / D)
        ang = torch.arange(T).float()[:, None] * inv
        c, s = ang.cos()[:, None], ang.sin()[:, None]
        a, b = v[..., 0::2], v[..., 1::2]
        return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)

    x = W["token_embd.weight"][ids]
    if arch == "gpt2":
        x = x + W["position_embd.weight"][:T]
    for i in range(n_layer):
        h = norm(x, f"blk.{i}.attn_norm")
        if arch == "gpt2":
            q, k, v = lin(h, f"blk.{i}.attn_qkv").split(C, dim=-1)
        else:
            q, k, v = (lin(h, f"blk.{i}.attn_{n}") for n in "qkv")
        q, k, v = q.view(T, n_head, D), k.view(T, n_kv, D), v.view(T, n_kv, D)
        if arch == "llama":
            q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(n_head // n_kv, 1), v.repeat_interleave(n_head // n_kv, 1)
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(D)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        att = torch.einsum("hts,shd->thd", scores.softmax(-1), v).reshape(T, C)
        x = x + lin(att, f"blk.{i}.attn_output")
        h = norm(x, f"blk.{i}.ffn_norm")
        if arch == "gpt2":
            h = F.gelu(lin(h, f"blk.{i}.ffn_up"), approximate="tanh")
        else:
            h = F.silu(lin(h, f"blk.{i}.ffn_gate")) * lin(h, f"blk.{i}.ffn_up")
        x = x + lin(h, f"blk.{i}.ffn_down")
    x = norm(x, "output_norm")
    return x @ W.get("output.weight", W["token_embd.weight"]).T


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa-untied", "llama-bias-tied"])
def test_gguf_file_alone_reproduces_our_logits(tmp_path, tok, name):
    """Everything llama.cpp needs is in the file, laid out as it reads it: a forward pass from the file
    alone gives our logits."""
    options, _ = ARCHS[name]
    run = load_run(make_run(tmp_path / "run", tok, **options))
    fields, tensors = gguf_read(export_gguf(tmp_path / "run", tmp_path / "m.gguf"))
    ids = run.tokenizer.encode(HELD_OUT)
    with torch.no_grad():
        ours = run.model(torch.tensor([ids]))[0][0]
    torch.testing.assert_close(llama_cpp_forward(fields, tensors, ids), ours, atol=1e-4, rtol=0)


def test_relu2_is_refused_by_gguf_and_a_relu_gated_llama_by_import(tmp_path, tok):
    make_run(tmp_path / "run", tok, **ARCHS["relu2-as-llama"][0])
    with pytest.raises(ScratchLMError, match="relu2.*llama.cpp"):
        export_gguf(tmp_path / "run", tmp_path / "m.gguf")
    out = export_hf(tmp_path / "run", tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["hidden_act"] == "relu"
    from safetensors.torch import load_file, save_file

    sd = load_file(out / "model.safetensors")
    sd["model.layers.1.mlp.up_proj.weight"] = sd["model.layers.1.mlp.up_proj.weight"] * 2  # now gate ≠ up
    save_file(sd, out / "model.safetensors")
    with pytest.raises(ScratchLMError, match="layer 1 has hidden_act relu with gate_proj ≠ up_proj"):
        import_hf(out, tmp_path / "b")
