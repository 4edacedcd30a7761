"""A real 2-process run under torchrun (gloo on CPU) must match one process.

2 ranks × 2 micro-batches each draw the same windows as 1 process × 4 micro-batches
(micro-batches are numbered globally), and DDP averages the ranks' gradients, so
per-step losses agree to float rounding in fp32. FSDP (`fully_shard`) shards the
weights and AdamW state instead; it must match too, and its final checkpoint must
load in a single process without FSDP.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchlm.config import build_config
from scratchlm.sample import load_model
from scratchlm.train import run_training

WORKER = """
import sys
from scratchlm.config import build_config
from scratchlm.train import run_training
overrides = sys.argv[2:]
# the doctor's live sampling runs a forward pass on rank 0 alone, which FSDP (a collective
# inside forward) cannot do; it stays on for DDP
diagnose = "train.fsdp=true" not in overrides
run_training(build_config("tiny", overrides=overrides), sys.argv[1], overwrite=True, quiet=True, sample=False, diagnose=diagnose)
"""


def overrides(corpus):
    return [f"data.path={corpus}", "data.tokenizer=char", "model.n_layer=2", "model.n_embd=64", "model.block_size=32",
            "train.batch_size=8", "train.micro_batch_size=2", "train.max_steps=4", "train.warmup_steps=2",
            "train.eval_interval=4", "train.eval_tokens=2048", "train.dtype=fp32", "train.device=cpu"]


def losses(run_dir: Path) -> tuple[list[float], list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r], [r["val_loss"] for r in rows if r.get("event") == "eval"]


def torchrun(tmp_path, corpus, extra=()) -> Path:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(out), *overrides(corpus), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, 4 micro-batches per step: the reference."""
    tmp = tmp_path_factory.mktemp("single")
    corpus = tmp / "small.txt"
    from conftest import SMALL_TEXT

    corpus.write_text(SMALL_TEXT)
    run_training(build_config("tiny", overrides=overrides(corpus)), tmp / "run", overwrite=True, quiet=True, sample=False)
    return corpus, losses(tmp / "run"), tmp / "run"


def test_ddp_two_processes_match_one(tmp_path, single):
    corpus, (ref_train, ref_val), _ = single
    train, val = losses(torchrun(tmp_path, corpus))
    assert len(train) == len(ref_train) == 4
    assert train == pytest.approx(ref_train, abs=1e-5)
    assert val == pytest.approx(ref_val, abs=1e-5)  # evaluation averaged over ranks


@pytest.mark.slow
def test_fsdp_two_processes_match_one_and_load_in_one(tmp_path, single):
    corpus, (ref_train, ref_val), ref_dir = single
    out = torchrun(tmp_path, corpus, ["train.fsdp=true"])
    train, val = losses(out)
    assert train == pytest.approx(ref_train, abs=1e-5)
    assert val == pytest.approx(ref_val, abs=1e-5)
    model, *_ = load_model(out)  # a single process, no FSDP, reads the gathered checkpoint
    ref, *_ = load_model(ref_dir)
    for (name, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
