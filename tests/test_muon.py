"""Muon (train/optim.py): Newton-Schulz orthogonalisation, the step against a reference written
differently, a toy problem, state round trip, and the trainer with train.optimizer=muon."""

import importlib.util
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchlm.config import build_config, from_dict
from scratchlm.errors import ScratchLMError
from scratchlm.model.gpt import GPT, GPTConfig
from scratchlm.train import run_training
from scratchlm.train.muon import NS_COEFFS, Muon, newton_schulz
from scratchlm.train.optim import make_optimizer


def tiny_gpt(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, **kw))


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (24, 24)])
def test_newton_schulz_is_near_orthogonal(shape):
    torch.manual_seed(0)
    g = torch.randn(*shape) * 1e-3  # the input's scale must not matter
    o = newton_schulz(g)
    s = torch.linalg.svdvals(o)
    # the quintic's fixed-point band: every singular value near 1, none near 0
    assert s.min() > 0.6 and s.max() < 1.25, s
    # and the directions are those of g: close to U V^T from the SVD
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = (o * (u @ vh)).sum() / (o.norm() * (u @ vh).norm())
    assert cos > 0.97


def svd_orthogonalise(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The same map as Newton-Schulz, computed another way: normalise, take the SVD and apply
    the quintic p(s) = a s + b s^3 + c s^5 to the singular values `steps` times."""
    a, b, c = NS_COEFFS
    u, s, vh = torch.linalg.svd(g.double() / (g.double().norm() + 1e-7), full_matrices=False)
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return (u * s) @ vh


def reference_step(model, states, lr, wd, momentum=0.95, betas=(0.9, 0.95), eps=1e-8):
    """Plain Muon (SGD-Nesterov momentum, orthogonalised) + AdamW, in float64, parameter by parameter."""
    names_io = {"transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight"}
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = p.grad.double()
            st = states.setdefault(name, {"t": 0, "buf": torch.zeros_like(g), "m": torch.zeros_like(g),
                                          "v": torch.zeros_like(g)})
            decay = wd if p.dim() >= 2 else 0.0
            if p.dim() == 2 and name not in names_io:
                st["buf"] = momentum * st["buf"] + (1 - momentum) * g
                nesterov = (1 - momentum) * g + momentum * st["buf"]
                scale = 0.2 * math.sqrt(max(p.shape))
                new = p.double() * (1 - lr * decay) - lr * scale * svd_orthogonalise(nesterov)
            else:
                st["t"] += 1
                st["m"] = betas[0] * st["m"] + (1 - betas[0]) * g
                st["v"] = betas[1] * st["v"] + (1 - betas[1]) * g * g
                m_hat, v_hat = st["m"] / (1 - betas[0] ** st["t"]), st["v"] / (1 - betas[1] ** st["t"])
                new = p.double() * (1 - lr * decay) - lr * m_hat / (v_hat.sqrt() + eps)
            p.copy_(new.to(p.dtype))


def loss_of(model, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 32, (4, 8), generator=g)
    y = torch.randint(0, 32, (4, 8), generator=g)
    return model(x, y)[1]


def test_muon_step_equals_reference():
    ours, ref = tiny_gpt(), tiny_gpt()
    opt, kind = make_optimizer(ours, 0.01, 0.1, (0.9, 0.95), "cpu", kind="muon")
    assert kind == "muon"
    states = {}
    for step in range(4):
        for model in (ours, ref):
            model.zero_grad(set_to_none=True)
            loss_of(model, step).backward()
        opt.step()
        reference_step(ref, states, 0.01, 0.1)
        for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"step {step}: {name}")


def test_parameter_split():
    model = tiny_gpt(tie_embeddings=False)
    opt, _ = make_optimizer(model, 0.01, 0.1, (0.9, 0.95), "cpu", kind="muon")
    name = {id(p): n for n, p in model.named_parameters()}
    muon = {name[id(p)] for g in opt.param_groups if g["muon"] for p in g["params"]}
    adamw = {name[id(p)] for g in opt.param_groups if not g["muon"] for p in g["params"]}
    assert "transformer.h.0.attn.c_attn.weight" in muon and "transformer.h.1.mlp.c_proj.weight" in muon
    assert {"transformer.wte.weight", "lm_head.weight"} <= adamw and not (muon & adamw)
    assert all(not n.startswith(("transformer.wte", "transformer.wpe", "lm_head")) for n in muon)
    assert len(muon) + len(adamw) == len(list(model.parameters()))
    vectors = [p for g in opt.param_groups for p in g["params"] if p.dim() < 2]
    assert vectors and all(g["weight_decay"] == 0 for g in opt.param_groups for p in g["params"] if p.dim() < 2)


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon arrived in PyTorch 2.9")
def test_matches_torch_muon_on_a_matrix():
    """PyTorch's own Muon with the same scaling rule ("match_rms_adamw") agrees with ours
    (to bf16 precision: PyTorch runs Newton-Schulz in bf16, ours in fp32)."""
    torch.manual_seed(0)
    w0 = torch.randn(24, 40)
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    ours = Muon([{"params": [a], "muon": True}], lr=0.02, weight_decay=0.1, momentum=0.95)
    theirs = torch.optim.Muon([b], lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True,
                              adjust_lr_fn="match_rms_adamw")
    for i in range(3):
        g = torch.randn(24, 40, generator=torch.Generator().manual_seed(i))
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    ours_delta, theirs_delta = a.detach() - w0, b.detach() - w0
    assert (ours_delta - theirs_delta).norm() < 0.02 * theirs_delta.norm()


def test_toy_classification_loss_falls():
    torch.manual_seed(0)
    x = torch.randn(256, 20)
    labels = (x[:, :5].sum(1) > 0).long() + (x[:, 5:10].sum(1) > 0).long()  # 3 classes
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 3))
    opt = Muon([{"params": [p for p in net.parameters() if p.dim() == 2], "muon": True},
                {"params": [p for p in net.parameters() if p.dim() < 2]}], lr=0.02)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(x), labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first, (first, loss.item())


def test_state_round_trip():
    a, b = tiny_gpt(), tiny_gpt()
    opt_a, _ = make_optimizer(a, 0.01, 0.1, (0.9, 0.95), "cpu", kind="muon")
    for step in range(3):
        opt_a.zero_grad()
        loss_of(a, step).backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b, _ = make_optimizer(b, 0.05, 0.0, (0.5, 0.5), "cpu", kind="muon")  # other settings: the state wins
    saved = io.BytesIO()  # through bytes, as a checkpoint goes (and so no tensor is shared with opt_a)
    torch.save(opt_a.state_dict(), saved)
    saved.seek(0)
    opt_b.load_state_dict(torch.load(saved, weights_only=True))
    assert opt_b.param_groups[0]["lr"] == 0.01 and opt_b.param_groups[0]["muon"]
    for step in range(3, 5):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            loss_of(model, step).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_muon_rejects_non_matrices_and_fsdp():
    with pytest.raises(ValueError, match="2-D"):
        Muon([{"params": [torch.nn.Parameter(torch.zeros(3))], "muon": True}])
    with pytest.raises(ScratchLMError, match="fsdp"):
        make_optimizer(tiny_gpt(), 0.01, 0.1, (0.9, 0.95), "fsdp", kind="muon")
    with pytest.raises(ScratchLMError, match="train.optimizer"):
        build_config(overrides={"train.optimizer": "sgd"})


SMALL = {"data.tokenizer": "char", "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.block_size": 32,
         "train.batch_size": 8, "train.warmup_steps": 2, "train.eval_tokens": 512, "train.dtype": "fp32",
         "train.device": "cpu", "train.threads": 1, "sample.num_samples": 0, "train.optimizer": "muon",
         "train.lr": 0.01, "viz.snapshots": False, "viz.figures": False, "viz.tensorboard": False}


def test_trainer_trains_with_muon_and_resumes_exactly(small_corpus, tmp_path):
    flat = dict(SMALL, **{"data.path": str(small_corpus), "train.max_steps": 40, "train.eval_interval": 20,
                          "train.micro_batch_size": 4,  # accumulation: 2 micro-steps per step
                          "train.schedule": "wsd", "train.cooldown_frac": 0.0})  # lr: the same for any max_steps
    lines = []
    whole = run_training(build_config(overrides=flat), tmp_path / "whole", say=lines.append)
    assert any("Muon" in line for line in lines)
    first = [r for r in map(json.loads, (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines())
             if "loss" in r and r.get("step", 99) < 3]
    assert whole["val_loss"] < first[0]["loss"] - 0.5  # ln(vocab) ≈ 3.2 at the start
    # 20 steps, then a resume to 40: the same weights as the uninterrupted run
    run_training(build_config(overrides=dict(flat, **{"train.max_steps": 20})), tmp_path / "split")
    saved = from_dict(json.loads((tmp_path / "split" / "config.json").read_text()))
    saved.train.max_steps = 40
    resumed = run_training(saved, tmp_path / "split", resume=True)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-6)


# ---- benchmarks/speedrun.py on the CPU with a tiny budget -------------------------------------------

SPEEDRUN = Path(__file__).resolve().parent.parent / "benchmarks" / "speedrun.py"
TINY = ["--model.n_layer", "1", "--model.n_embd", "32", "--model.n_head", "2", "--model.block_size", "16",
        "--train.batch_size", "4", "--train.threads", "1", "--train.warmup_steps", "2"]


def speedrun(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SPEEDRUN), "--device", "cpu", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.mark.slow  # three runs of the script in fresh processes
def test_speedrun_reports_and_exit_status(small_corpus, tmp_path):
    met = speedrun("--data", str(small_corpus), "--max-steps", "6", "--target", "50", *TINY, cwd=tmp_path)
    assert met.returncode == 0, met.stderr
    out = met.stdout
    assert "optimizer=muon" in out and "n_layer=1" in out  # the configuration is printed
    assert "final   : val" in out and "whole validation split" in out and "TARGET MET" in out
    missed = speedrun("--data", str(small_corpus), "--max-steps", "2", "--target", "0.01", *TINY, cwd=tmp_path)
    assert missed.returncode == 1 and "missed: val" in missed.stdout


def test_speedrun_says_when_the_data_is_absent(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("speedrun", SPEEDRUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["speedrun.py", "--data", str(tmp_path / "nope.txt")])
    assert module.main() == 2
    assert "Tiny Shakespeare file is absent" in capsys.readouterr().err
    small = {"model.n_layer": 1, "model.n_embd": 32, "model.n_head": 2, "model.block_size": 16, "train.batch_size": 2}
    assert "CPU-s per step" in module.step_cost("speedrun", small, steps=1)
