"""Block options (model.norm_position, norm, mlp, ff_dim, position, n_kv_head, qk_norm, key_shift, tie_embeddings,
bias, logit_softcap, attention): each one trains, and the KV cache and the one-token decoder give the
full forward pass's logits; bad values are one-line errors; a checkpoint of each samples after a reload."""

import os
import signal
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.cli import main
from scratchlm.config import build_config
from scratchlm.errors import ScratchLMError
from scratchlm.inference.generate import generate_tokens
from scratchlm.model import GPT, Decoder, GPTConfig
from scratchlm.train import checkpoint as ckpt
from scratchlm.train import run_training
from scratchlm.train.events import Events
from test_accumulation import make_trainer
from test_resume import SMALL, losses_by_step, resume

BASE = GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=4, n_embd=32)
OPTIONS = {
    "default": {},
    "post-norm": {"norm_position": "post"},
    "rmsnorm": {"norm": "rmsnorm"},
    "relu": {"mlp": "relu"},
    "relu2": {"mlp": "relu2"},
    "swiglu": {"mlp": "swiglu"},
    "ff_dim": {"ff_dim": 40},
    "rope": {"position": "rope"},
    "gqa 2 kv heads": {"n_kv_head": 2},
    "mqa 1 kv head": {"n_kv_head": 1},
    "qk_norm": {"qk_norm": True},
    "key_shift": {"key_shift": True},
    "key_shift + gqa + rope": {"key_shift": True, "n_kv_head": 2, "position": "rope"},
    "shift_taps 3 + gqa + rope": {"key_shift": True, "shift_taps": 3, "n_kv_head": 2, "position": "rope"},
    "untied": {"tie_embeddings": False},
    "no bias": {"bias": False},
    "softcap": {"logit_softcap": 3.0},
    "written": {"attention": "written"},
    "guide": {"norm_position": "post", "mlp": "relu", "dropout": 0.1},
    "llama": {"norm": "rmsnorm", "mlp": "swiglu", "position": "rope", "n_kv_head": 2, "bias": False,
              "tie_embeddings": False},
    "everything": {"norm": "rmsnorm", "mlp": "relu2", "position": "rope", "n_kv_head": 1, "qk_norm": True,
                   "key_shift": True, "shift_taps": 2, "logit_softcap": 5.0, "norm_position": "post", "attention": "written"},
}


def model_for(options, seed=0):
    torch.manual_seed(seed)
    model = GPT(replace(BASE, **options)).eval()
    with torch.no_grad():  # make gains, biases and norms non-trivial so a dropped term would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", OPTIONS)
def test_decoder_and_cache_equal_the_full_forward_pass(name):
    model = model_for(OPTIONS[name])
    x = torch.randint(0, 97, (3, 12))
    full, _ = model(x)
    with torch.inference_mode():
        caches = model.new_kv_caches(3)
        prompt, _ = model(x[:, :4], kv_caches=caches)  # the prompt fills the cache through GPT.forward
        decoder = Decoder(model)
        steps = torch.stack([decoder.step(x[:, i : i + 1], caches) for i in range(4, 12)], 1)
        caches = model.new_kv_caches(3)
        cached = torch.cat([model(x[:, :5], kv_caches=caches)[0]]
                           + [model(x[:, i : i + 1], kv_caches=caches)[0] for i in range(5, 12)], 1)
    torch.testing.assert_close(prompt, full[:, :4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steps, full[:, 4:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["default", "rope", "llama", "everything"])
def test_generation_with_and_without_cache_agrees_past_the_context(name):
    model = model_for(OPTIONS[name])
    prompt = torch.randint(0, 97, (2, 5))
    runs = []
    for kw in ({}, {"fast": False}, {"use_cache": False}):
        g = torch.Generator().manual_seed(3)
        runs.append(torch.cat(list(generate_tokens(model, prompt, 30, temperature=1.0, generator=g, **kw)), 1).tolist())
    assert runs[0] == runs[1] == runs[2]  # 35 tokens > context 16: the window slides


@pytest.mark.parametrize("name", OPTIONS)
def test_each_option_learns(name):
    torch.manual_seed(0)
    model = GPT(replace(BASE, **OPTIONS[name]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 97, (4, 16))
    y = torch.roll(x, -1, dims=1)
    losses = []
    for _ in range(25):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses


@pytest.mark.parametrize("name", ["guide", "llama", "everything"])
def test_activation_checkpointing_gives_the_same_gradients(name):
    cfg = replace(BASE, **OPTIONS[name])
    torch.manual_seed(0)
    plain, ckpt_model = GPT(cfg), GPT(cfg)
    ckpt_model.load_state_dict(plain.state_dict())
    ckpt_model.checkpoint_blocks = {0, 1}
    x, y = torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16))
    grads = []
    for model in (plain, ckpt_model):
        torch.manual_seed(1)  # the same dropout masks
        model(x, y)[1].backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5, msg=n)


def test_parameter_names():
    names = set(GPT(replace(BASE, **OPTIONS["llama"])).state_dict())
    assert "transformer.wpe.weight" not in names and "lm_head.weight" in names
    assert "transformer.h.0.ln_1.bias" not in names and "transformer.h.0.attn.c_attn.bias" not in names
    c_attn = GPT(replace(BASE, **OPTIONS["llama"])).transformer.h[0].attn.c_attn
    assert c_attn.weight.shape == (32 + 2 * 2 * 8, 32)  # q for 4 heads, k and v for 2 heads of 8
    swiglu = GPT(replace(BASE, mlp="swiglu")).transformer.h[0].mlp
    assert swiglu.c_fc.weight.shape == (2 * 88, 32) and swiglu.c_proj.weight.shape == (32, 88)  # 8/3·32 -> 88
    post = set(GPT(replace(BASE, norm_position="post", qk_norm=True)).state_dict())
    assert "transformer.ln_f.weight" not in post and "transformer.h.1.attn.q_norm.weight" in post
    default = set(GPT(BASE).state_dict())
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias",
                "lm_head.weight"}
    for i in range(2):
        expected |= {f"transformer.h.{i}.{part}.{kind}" for part in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2",
                                                                    "mlp.c_fc", "mlp.c_proj") for kind in ("weight", "bias")}
    assert default == expected  # GPT-2's names: older checkpoints load


def test_default_model_is_unchanged():
    """The defaults build today's model: same parameters, same initial values for a seed."""
    torch.manual_seed(0)
    model = GPT(BASE)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert sum(p.numel() for p in model.parameters()) == 97 * 32 + 16 * 32 + 2 * 12 * 32 * 32 + 2 * (13 * 32) + 2 * 32


@pytest.mark.parametrize("override,words", [
    ("model.norm_position=middle", ["model.norm_position", "pre, post"]),
    ("model.norm=batchnorm", ["model.norm", "layernorm, rmsnorm"]),
    ("model.mlp=tanh", ["model.mlp", "gelu, relu, relu2, swiglu"]),
    ("model.position=alibi", ["model.position", "learned, rope"]),
    ("model.attention=flash", ["model.attention", "fused, written"]),
    ("model.n_kv_head=3", ["model.n_kv_head", "divisor"]),
    ("model.ff_dim=-1", ["model.ff_dim"]),
    ("model.logit_softcap=-2", ["model.logit_softcap"]),
    ("model.rope_base=0.5", ["model.rope_base"]),
    ("model.qk_norm=maybe", ["model.qk_norm"]),
])
def test_bad_values_are_one_line_errors(override, words):
    with pytest.raises(ScratchLMError) as e:
        build_config("tiny", overrides=[override])
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_rope_needs_an_even_head_size():
    with pytest.raises(ScratchLMError, match="model.position.*even"):
        build_config("tiny", overrides=["model.position=rope", "model.n_embd=12", "model.n_head=4"])


@pytest.mark.parametrize("name", ["guide", "llama", "everything", "untied"])
def test_checkpoint_of_each_option_samples_after_a_reload(tmp_path, name):
    overrides = [f"model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in OPTIONS[name].items()]
    trainer = make_trainer(tmp_path, overrides)
    for _ in range(2):
        trainer.train_step()
    trainer.step = 2
    folder = trainer.save("x")
    _, model_sd, _ = ckpt.load_checkpoint(folder, with_trainer=False)
    assert ("lm_head.weight" in model_sd) == (not trainer.cfg.model.tie_embeddings)
    fresh = GPT(trainer.cfg.model)
    ckpt.load_model_weights(fresh, model_sd, str(folder))
    for (n, a), b in zip(trainer.raw_model.state_dict().items(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)
    prompt = torch.zeros(1, 1, dtype=torch.long)
    tokens = [torch.cat(list(generate_tokens(m, prompt, 12, temperature=0.0)), 1) for m in (trainer.raw_model, fresh)]
    assert tokens[0].tolist() == tokens[1].tolist() and tokens[0].shape == (1, 12)


MODERN = ["--model.norm", "rmsnorm", "--model.mlp", "swiglu", "--model.position", "rope", "--model.n_kv_head", "2",
          "--model.qk_norm", "true", "--model.tie_embeddings", "false", "--model.bias", "false",
          "--model.logit_softcap", "15"]


QUICK = ["--viz.snapshots", "false", "--viz.figures", "false", "--viz.tensorboard", "false"]  # no figures: seconds


@pytest.mark.parametrize("options", [["--model.attention", "written"], MODERN,
                                     pytest.param(["--preset", "guide"], marks=pytest.mark.slow)])
def test_command_line_trains_and_samples_each_kind(tmp_path, small_corpus, capsys, options):
    run = tmp_path / "run"
    preset = [] if "--preset" in options else ["--preset", "tiny"]
    args = ["train", *preset, "--data", str(small_corpus), "--out", str(run), "--max-steps", "4",
            "--data.tokenizer", "char", "--model.n_layer", "2", "--model.n_embd", "64", "--model.block_size", "32",
            "--train.eval_interval", "2", "--train.eval_tokens", "256", "--sample.num_samples", "0", "--quiet",
            "--no-doctor", *QUICK, *options]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "ALL:", "--max-new-tokens", "20", "--num-samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "ALL:" in out and len(out) > 10


@pytest.mark.slow
def test_a_modern_block_resumes_exactly(tmp_path, small_corpus):
    """Stopped (Ctrl-C at step 3) and resumed in a new process == straight through, bit for bit."""
    over = {**SMALL, "data.path": str(small_corpus), "train.max_steps": 6, "train.eval_interval": 100,
            **{MODERN[i][2:]: MODERN[i + 1] for i in range(0, len(MODERN), 2)}}
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_training(build_config("tiny", overrides=over), straight)
    events = Events()
    events.on("step_end", lambda info: info["step"] == 3 and os.kill(os.getpid(), signal.SIGINT))
    assert run_training(build_config("tiny", overrides=over), stopped, events=events)["step"] == 3
    done = resume(stopped, "--no-doctor", *QUICK)
    assert done.returncode == 0, done.stderr
    assert losses_by_step(straight) == losses_by_step(stopped)
    a, b = (load_file(str(r / "checkpoints" / "final" / ckpt.MODEL_FILE)) for r in (straight, stopped))
    assert "lm_head.weight" in a and set(a) == set(b)  # untied: the head is saved
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_memory_estimate_knows_the_options():
    from scratchlm.train.memory import activation_values, estimate

    base = build_config("tiny", overrides=["train.dtype=fp32"])
    gqa = build_config("tiny", overrides=["train.dtype=fp32", "model.n_kv_head=1", "model.mlp=swiglu"])
    assert activation_values(base.model) == 17 * base.model.n_embd  # GPT-2's block, as before
    a, b = estimate(base), estimate(gqa)
    assert b["kv_cache"] == a["kv_cache"] // base.model.n_head  # one key/value head instead of n_head
    assert b["parameters"] == sum(p.numel() for p in GPT(gqa.model).parameters())
    assert b["activations"] > a["activations"]  # SwiGLU keeps gate, up and their product
