"""What every step line of metrics.jsonl carries: speed, model FLOPs utilisation and ETA."""

import json
import math

from scratchlm.config import build_config
from scratchlm.train import run_training


def test_step_lines_have_tokens_per_s_mfu_and_eta(tmp_path, small_corpus):
    over = {"data.path": str(small_corpus), "data.tokenizer": "char", "model.n_layer": 1, "model.n_head": 2, "model.n_embd": 32,
            "model.block_size": 32, "train.batch_size": 4, "train.max_steps": 3, "train.eval_interval": 100,
            "train.eval_tokens": 256, "train.warmup_steps": 1, "train.dtype": "fp32", "train.device": "cpu", "sample.num_samples": 0}
    run_training(build_config("tiny", overrides=over), tmp_path / "run")
    steps = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1.5 and r["eta_s"] >= 0 and math.isfinite(r["eta_s"])
    assert steps[-1]["eta_s"] == 0  # nothing left of the budget
