"""A real 2-process run under torchrun (gloo on CPU) must match one process.

2 ranks × 2 micro-batches each draw the same windows as 1 process × 4 micro-batches
(micro-batches are numbered globally), and DDP averages the ranks' gradients, so
per-step losses agree to float rounding in fp32. FSDP (`fully_shard`) shards the
weights and AdamW state instead; it must match too, and its final checkpoint must
load in a single process without FSDP.

The runs are started the way a user starts them, `torchrun ... -m scratchlm train`,
from a cold start: an empty cache and a new run folder, which every rank prepares
(rank 0 first, then the others read what it wrote).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from scratchlm.config import build_config
from scratchlm.inference import load_run
from scratchlm.train import run_training
from scratchlm.train.loop import Trainer
from scratchlm.train.runtime import Runtime


def overrides(corpus):
    return [f"data.path={corpus}", "data.tokenizer=char", "model.n_layer=2", "model.n_embd=64", "model.block_size=32",
            "train.batch_size=8", "train.micro_batch_size=2", "train.max_steps=4", "train.warmup_steps=2",
            "train.eval_interval=4", "train.eval_tokens=2048", "train.dtype=fp32", "train.device=cpu",
            "viz.figures=false"]


def losses(run_dir: Path) -> tuple[list[float], list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r], [r["val_loss"] for r in rows if r.get("event") == "eval"]


def torchrun(tmp_path, corpus, extra=()) -> Path:
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SCRATCHLM_CACHE": str(tmp_path / "cold-cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "scratchlm", "train", "--preset", "tiny", "--out", str(out), "--quiet",
           *[f"--{o}" for o in overrides(corpus)], *extra]
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
    run_training(build_config("tiny", overrides=overrides(corpus)), tmp / "run", overwrite=True)
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
    # the doctor's probes read full weights on rank 0 alone, which FSDP shards: it stays off
    out = torchrun(tmp_path, corpus, ["--train.fsdp=true", "--no-doctor"])
    train, val = losses(out)
    assert train == pytest.approx(ref_train, abs=1e-5)
    assert val == pytest.approx(ref_val, abs=1e-5)
    model = load_run(out).model  # a single process, no FSDP, reads the gathered checkpoint
    ref = load_run(ref_dir).model
    for (name, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_ddp_syncs_gradients_on_the_last_micro_step_only(tmp_path):
    """DDP's communication hook runs once per gradient all-reduce; record which micro-step
    it ran in. (A one-process gloo group stands in for the ranks: the hook runs the same.)"""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        cfg = build_config("tiny", overrides=["data.tokenizer=char", "model.vocab_size=32", "model.n_layer=1", "model.n_embd=32",
                                              "model.block_size=16", "train.batch_size=8", "train.micro_batch_size=1"])
        rng = np.random.default_rng(0)
        data = {s: rng.integers(0, 32, 500).astype(np.uint16) for s in ("train", "val")}

        class Tok:
            vocab_size = 32
            special_tokens: dict = {}

            def decode(self, ids):
                return "x" * len(ids)

            def token_bytes(self, token_id):
                return b"x"

        rt = Runtime(torch.device("cpu"), "test", "fp32", "test", rank=0, world=2)  # 2 ranks × 4 micro-steps
        trainer = Trainer(cfg, tmp_path, Tok(), "test", data, rt)
        assert trainer.accum_steps == 4
        micro, synced = {"now": None}, []
        get = trainer.train_batches.get
        trainer.train_batches.get = lambda step, m, batch: (micro.update(now=m), get(step, m, batch))[1]

        def hook(state, bucket):
            synced.append(micro["now"])
            return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0])

        trainer.model.register_comm_hook(None, hook)
        for _ in range(2):
            trainer.train_step()
        assert synced and set(synced) == {trainer.accum_steps - 1}  # micro-steps 0..2 ran under no_sync
    finally:
        dist.destroy_process_group()
