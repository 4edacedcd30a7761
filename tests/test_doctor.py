"""The doctor: provoke each symptom on a tiny model and check that exactly the right
detector fires; a healthy run fires none; `scratchlm doctor` reads run folders back."""

import json
import math
import os
import signal
import time

import pytest

from scratchlm.config import build_config
from scratchlm.doctor import live
from scratchlm.doctor.cli import main as doctor_main
from scratchlm.doctor.detectors import Doctor, RunInfo, repetition_stats
from scratchlm.doctor.records import drop_rewound, read_jsonl
from scratchlm.train import run_training
from scratchlm.train.events import Events
from scratchlm.train.loop import Trainer

# A small model that trains in a few ms per step on a laptop CPU.
SMALL = {"data.tokenizer": "char", "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 48, "model.block_size": 32,
         "train.batch_size": 8, "train.eval_tokens": 2048, "train.warmup_steps": 5, "train.lr": 3e-3,
         "train.keep_last": 1, "sample.num_samples": 0}


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A 120 KB slice of the built-in plays (real text: varied, learnable) and a 3 KB one (memorisable)."""
    from scratchlm.data.corpus import load_corpus

    text = "".join(load_corpus("", 0.1).train)
    folder = tmp_path_factory.mktemp("texts")
    (folder / "plays.txt").write_text(text[:120_000], encoding="utf-8")
    (folder / "tiny.txt").write_text(text[200_000:203_000], encoding="utf-8")
    return folder


def train(tmp_path, data, steps, **overrides):
    cfg = build_config("tiny", overrides={**SMALL, "data.path": str(data), "train.max_steps": steps, **overrides})
    run = tmp_path / "run"
    summary = run_training(cfg, run, overwrite=True, quiet=True, sample=False)
    return run, summary


def fired(run) -> list[str]:
    return [f["key"] for f in read_jsonl(run / "diagnostics.jsonl")]


def findings(run) -> dict:
    return {f["key"]: f for f in read_jsonl(run / "diagnostics.jsonl")}


def test_healthy_run_fires_nothing_and_doctor_exits_0(tmp_path, texts, capsys):
    run, _ = train(tmp_path, texts / "plays.txt", 150, **{"train.eval_interval": 50})
    assert fired(run) == []
    probes = read_jsonl(run / "probes.jsonl")
    ratios = [p["update_ratio"] for p in probes if p["kind"] == "update_ratio"]
    reps = [p for p in probes if p["kind"] == "repetition"]
    assert len(ratios) >= 10 and all(1e-4 < r < 0.1 for r in ratios)  # the healthy band of docs/troubleshooting.md
    assert len(reps) == 3
    capsys.readouterr()
    assert doctor_main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "no problem seen" in out and "not measurable" not in out  # every row was measured


def test_huge_lr_fires_exploding_only(tmp_path, texts):
    run, _ = train(tmp_path, texts / "plays.txt", 40, **{"train.lr": 10.0, "train.grad_clip": 0.0, "train.eval_interval": 40})
    assert fired(run) == ["exploding"]
    f = findings(run)["exploding"]
    assert f["step"] <= 20  # caught within two windows, not at the end
    assert "lower the learning rate" in f["fix"]


def test_tiny_lr_fires_not_decreasing_too_low_only(tmp_path, texts):
    run, _ = train(tmp_path, texts / "plays.txt", 40, **{"train.lr": 1e-7, "train.eval_interval": 40})
    assert fired(run) == ["not_decreasing"]
    f = findings(run)["not_decreasing"]
    assert f["numbers"]["verdict"] == "too low"
    assert f["numbers"]["update_ratio"] < 1e-4  # measured from the weights, not guessed from lr
    assert "raise the learning rate" in f["fix"]


def test_fixed_repetitive_sample_fires_repetition_only(tmp_path, texts, monkeypatch):
    loop = [7, 8, 9, 10] * 100  # the model "says" the same four characters over and over
    monkeypatch.setattr(live, "sample_ids", lambda model, prompt, n, *a: loop[:n])
    run, _ = train(tmp_path, texts / "plays.txt", 60, **{"train.eval_interval": 20})
    assert fired(run) == ["repetition"]
    f = findings(run)["repetition"]
    assert f["step"] == 40  # the second evaluation in a row
    assert f["numbers"]["rep"] > 0.95 and f["numbers"]["ref_rep"] < 0.5
    assert "n_embd = 48" in f["cause"] and "--model.n_embd 384" in f["fix"]  # related to the model width


def test_narrow_model_with_greedy_sampling_repeats(tmp_path, texts):
    run, _ = train(tmp_path, texts / "plays.txt", 60, **{"model.n_embd": 16, "model.n_head": 2, "train.eval_interval": 20,
                                                          "sample.temperature": 0.0})
    assert fired(run) == ["repetition"]
    assert "n_embd = 16" in findings(run)["repetition"]["cause"]


def test_throughput_cap_fires_too_slow_only(tmp_path, texts, monkeypatch):
    real_step = Trainer.train_step

    def capped(self):  # at most 256 tokens per 20 ms: ~12.8k tokens/s
        time.sleep(0.02)
        return real_step(self)

    def stop_at_15(info):  # a first Ctrl-C: the loop finishes the step, checkpoints and stops
        if info["step"] == 15:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "train_step", capped)
    events = Events()
    events.on("step_end", stop_at_15)
    # 10 million steps × ≥ 20 ms: ≥ 55 h planned, over the 24 h threshold
    cfg = build_config("tiny", overrides={**SMALL, "data.path": str(texts / "plays.txt"), "train.max_steps": 10_000_000,
                                          "train.eval_interval": 1_000_000})
    summary = run_training(cfg, tmp_path / "run", overwrite=True, quiet=True, sample=False, events=events)
    assert summary["stopped_by"] == "signal"
    assert fired(tmp_path / "run") == ["slow"]
    f = findings(tmp_path / "run")["slow"]
    assert f["numbers"]["tokens_per_s"] < 12_800 and f["numbers"]["total_hours"] > 24
    assert "torch.compile" in f["fix"]


def test_tiny_training_set_fires_overfitting_only(tmp_path, texts):
    run, _ = train(tmp_path, texts / "tiny.txt", 400, **{"model.n_embd": 96, "data.val_fraction": 0.3, "train.eval_interval": 25,
                                                         "train.eval_tokens": 512})
    assert fired(run) == ["overfitting"]
    n = findings(run)["overfitting"]["numbers"]
    assert n["val_loss"] > n["best_val_loss"] and n["train_loss"] < n["train_loss_at_best"]


# ---- the offline doctor ---------------------------------------------------------------
def test_doctor_on_crashed_run_without_live_files(tmp_path, texts, capsys):
    cfg = build_config("tiny", overrides={**SMALL, "data.path": str(texts / "plays.txt"), "train.max_steps": 40,
                                          "train.lr": 1e-7, "train.eval_interval": 20})
    run = tmp_path / "run"
    run_training(cfg, run, overwrite=True, quiet=True, sample=False, diagnose=False)
    assert not (run / "diagnostics.jsonl").exists()
    # simulate a crash: no final checkpoint, a half-written last line
    import shutil

    shutil.rmtree(run / "checkpoints" / "final")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 41, "loss": 4.3')
    capsys.readouterr()
    assert doctor_main([str(run)]) == 1  # the flat loss is found from metrics.jsonl alone
    out = capsys.readouterr().out
    assert "not finished" in out and "learning rate too low" in out
    assert "Model repeats gibberish" in out and "not measurable" in out  # no samples without the live doctor
    report = json.loads(_json(run, capsys))
    assert report["problems"] == ["not_decreasing"]


def _json(run, capsys):
    doctor_main([str(run), "--json"])
    return capsys.readouterr().out


def test_doctor_exit_2_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert doctor_main([str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


# ---- detector units -----------------------------------------------------------------
def test_repetition_stats_counts_repeated_ngrams():
    rep, distinct2 = repetition_stats(list("abcabcabc"), 3)
    assert rep == pytest.approx(4 / 7)  # 7 trigrams, 3 different
    assert distinct2 == pytest.approx(3 / 8)  # ab, bc, ca among 8 bigrams
    assert repetition_stats(list("abcdefgh"), 4) == (0.0, 1.0)


def test_nan_fires_on_the_step_it_happens():
    d = Doctor(RunInfo(vocab_size=65, max_steps=100, tokens_per_step=256, warmup_steps=5))
    for s in range(1, 4):
        d.step({"step": s, "loss": math.log(65), "lr": 1e-3, "grad_norm": 1.0, "clipped": False, "skipped": None,
                "tokens_per_s": 1e5, "time": s * 0.01})
    d.step({"step": 4, "loss": float("nan"), "lr": 1e-3, "grad_norm": float("inf"), "clipped": True, "skipped": "non-finite loss",
            "tokens_per_s": 1e5, "time": 0.04})
    assert [f.key for f in d.findings] == ["exploding"] and d.findings[0].step == 4


def test_initial_loss_far_from_ln_vocab_fires():
    d = Doctor(RunInfo(vocab_size=65, max_steps=100))
    d.step({"step": 1, "loss": 9.0, "lr": 1e-4, "grad_norm": 1.0, "tokens_per_s": 1e5, "time": 0.0})
    assert [f.key for f in d.findings] == ["initial_loss"]
    assert "init" in d.findings[0].cause


def test_rewound_records_after_a_resume_are_dropped():
    recs = [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4)] + [{"event": "resume", "step": 2}] + [{"step": s, "loss": 2.0} for s in (3, 4, 5)]
    kept = [(r["step"], r.get("loss")) for r in drop_rewound(recs) if "loss" in r]
    assert kept == [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 2.0)]
