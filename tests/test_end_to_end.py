"""A tiny run from the command line: it writes a run folder, and `sample` reads it back;
the time budget, the start-up printout, the metrics log, and bits per byte."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scratchlm.cli import main
from scratchlm.config import build_config
from scratchlm.inference import load_run
from scratchlm.train.loop import Trainer
from scratchlm.train.runtime import Runtime


def test_tiny_run_writes_a_run_folder_and_samples(tmp_path, small_corpus, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--preset", "tiny", "--data", str(small_corpus), "--out", str(run), "--max-steps", "40",
               "--data.tokenizer", "char", "--train.eval_interval", "20", "--train.warmup_steps", "5",
               "--sample.max_new_tokens", "40", "--sample.num_samples", "1", "--quiet"])
    assert rc == 0
    for name in ("config.json", "tokenizer.json", "split.json", "metrics.jsonl"):
        assert (run / name).exists(), name
    for ck in ("best", "final", "step_0000040"):
        assert (run / "checkpoints" / ck / "manifest.json").exists(), ck
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if r.get("event") == "eval"]
    assert len(steps) == 40 and len(evals) == 2
    assert steps[-1]["loss"] < steps[0]["loss"] - 1.0  # it learned something
    assert all(0 < e["val_bpb"] < 8 for e in evals)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["vocab_size"] == json.loads((run / "tokenizer.json").read_text())["chars"].__len__()

    # sampling from the run folder, by the console command, streams text and is seeded
    args = ["sample", str(run), "--prompt", "ALL:", "--max-new-tokens", "30", "--seed", "5", "--num-samples", "1"]
    out1 = subprocess.run([sys.executable, "-m", "scratchlm", *args], capture_output=True, text=True, check=True).stdout
    capsys.readouterr()
    assert main(args) == 0 and capsys.readouterr().out == out1 and "ALL:" in out1  # the same text in-process
    assert main(args + ["--dtype", "bf16"]) == 0
    out16 = capsys.readouterr().out
    assert "ALL:" in out16 and len(out16) > len("ALL:") + 10  # 16-bit decoder weights also give text
    with pytest.raises(SystemExit):  # argparse refuses it: exit status 2 and the choices
        main(args + ["--dtype", "int3"])
    assert "int3" in capsys.readouterr().err

    loaded = load_run(run / "checkpoints" / "final")
    assert loaded.model.config.n_layer == 4 and loaded.tokenizer.vocab_size <= loaded.model.config.vocab_size


def test_existing_run_folder_is_refused_without_overwrite(tmp_path, small_corpus, capsys):
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", str(small_corpus), "--out", str(run), "--max-steps", "2",
            "--data.tokenizer", "char", "--sample.num_samples", "0", "--quiet"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_time_budget_startup_printout_and_metrics(tmp_path, small_corpus, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--preset", "tiny", "--data", str(small_corpus), "--out", str(run), "--max-time", "1",
               "--max-steps", "1000000", "--data.tokenizer", "char", "--train.eval_interval", "100000",
               "--sample.num_samples", "0", "--no-doctor"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "stopped by time" in out  # the step budget is far away: the 1 s budget ended it
    # what a learner should see at start: size, tokens per step, device and dtype with reasons
    assert re.search(r"model +[\d.]+M parameters", out)
    assert "16 sequences × 64 tokens = 1,024 tokens per step" in out
    assert re.search(r"device +cpu — \S", out) and re.search(r"dtype +(fp32|bf16|fp16) — \S", out)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert 0 < len(steps) < 1000000 and steps[-1]["time"] >= 1.0
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in steps)  # logged every step


class ByteLenTok:
    """Stands in for a tokenizer whose tokens stand for 1 to 4 bytes of text: id i is 1 + i % 4 bytes."""

    vocab_size = 48
    special_tokens: dict = {}

    def decode(self, ids):
        return "".join("x" * (1 + i % 4) for i in ids)

    def token_bytes(self, token_id):
        return b"x" * (1 + token_id % 4)


def test_bits_per_byte_is_loss_over_ln2_times_tokens_per_byte(tmp_path):
    V = ByteLenTok.vocab_size
    cfg = build_config("tiny", overrides=["data.tokenizer=char", f"model.vocab_size={V}", "model.n_layer=1",
                                          "model.n_embd=32", "model.n_head=2", "model.block_size=16", "train.eval_tokens=512"])
    rng = np.random.default_rng(0)
    data = {s: rng.integers(0, V, n).astype(np.uint16) for s, n in (("train", 2000), ("val", 1000))}
    trainer = Trainer(cfg, tmp_path, ByteLenTok(), "test", data, Runtime(torch.device("cpu"), "test", "fp32", "test"))
    ev = trainer.evaluate()
    # the same windows, by hand: nats per token, and the bytes the target tokens stand for
    nats = tokens = nbytes = 0
    with torch.no_grad():
        for x, y in trainer.val_batches.eval_windows(cfg.train.eval_tokens, trainer.micro_batch_size):
            logits, _ = trainer.raw_model(x, y)
            nats += F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction="sum").item()
            tokens += y.numel()
            nbytes += sum(1 + i % 4 for i in y.reshape(-1).tolist())
    assert ev["val_tokens"] == tokens
    assert ev["val_loss"] == pytest.approx(nats / tokens, rel=1e-6)
    assert ev["val_bpb"] == pytest.approx(ev["val_loss"] / math.log(2) * tokens / nbytes, rel=1e-12)
