"""A tiny run from the command line: it writes a run folder, and `sample` reads it back."""

import json
import subprocess
import sys

from scratchlm.cli import main
from scratchlm.sample import load_model


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
    cmd = [sys.executable, "-m", "scratchlm", "sample", str(run), "--prompt", "ALL:", "--max-new-tokens", "30", "--seed", "5", "--num-samples", "1"]
    out1 = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    out2 = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out1 == out2 and "ALL:" in out1

    model, tok, _ = load_model(run / "checkpoints" / "final")
    assert model.config.n_layer == 4


def test_existing_run_folder_is_refused_without_overwrite(tmp_path, small_corpus, capsys):
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", str(small_corpus), "--out", str(run), "--max-steps", "2",
            "--data.tokenizer", "char", "--sample.num_samples", "0", "--quiet"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
