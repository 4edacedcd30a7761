"""The doctor: provoke each symptom on a tiny model and check that exactly the right
detector fires; a healthy run fires none; `scratchlm doctor` reads run folders back."""

import json
import math
import os
import signal
import time

import pytest

from scratchlm.config import build_config, to_dict
from scratchlm.doctor import live
from scratchlm.doctor.diagnose import diagnose
from scratchlm.cli import main


def doctor_main(argv):
    return main(["doctor", *argv])
from scratchlm.doctor.detectors import Doctor, RunInfo, repetition_stats
from scratchlm.doctor.records import drop_rewound, read_jsonl
from scratchlm.errors import ScratchLMError
from scratchlm.train import run_training
from scratchlm.train.events import Events
from scratchlm.train.loop import Trainer

# A small model that trains in a few ms per step on a laptop CPU.
SMALL = {"data.tokenizer": "char", "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 48, "model.block_size": 32,
         "train.batch_size": 8, "train.eval_tokens": 2048, "train.warmup_steps": 5, "train.lr": 3e-3,
         "train.keep_last": 1, "sample.num_samples": 0}
# lr 10 from the first step (no warm-up), without clipping: NaN within ~15 steps. With the usual 5 warm-up
# steps whether the loss reaches NaN within 40 steps depends on the order of the sums, so on the number of
# threads (two: step 8; one: it peaked at ~3,000 and came down).
HUGE_LR = {"train.lr": 10.0, "train.grad_clip": 0.0, "train.warmup_steps": 0}


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A 120 KB slice of the built-in plays (real text: varied, learnable) and a 3 KB one (memorisable)."""
    from scratchlm.data.corpus import load_corpus

    text = "".join(load_corpus("", 0.1).train)
    folder = tmp_path_factory.mktemp("texts")
    (folder / "plays.txt").write_text(text[:120_000], encoding="utf-8")
    (folder / "tiny.txt").write_text(text[200_000:203_000], encoding="utf-8")
    return folder


def train(tmp_path, data, steps, events=None, quiet=True, **overrides):
    """A run with the live doctor attached (quiet unless asked)."""
    cfg = build_config("tiny", overrides={**SMALL, "data.path": str(data), "train.max_steps": steps, **overrides})
    run = tmp_path / "run"
    summary = run_training(cfg, run, overwrite=True, events=live.attach(events, quiet=quiet))
    return run, summary


def fired(run) -> list[str]:
    return [f["key"] for f in read_jsonl(run / "diagnostics.jsonl") if f.get("kind") == "finding"]


def findings(run) -> dict:
    return {f["key"]: f for f in read_jsonl(run / "diagnostics.jsonl") if f.get("kind") == "finding"}


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
    # the guard off: it would skip the NaN steps, roll back three times and give up (an error).
    # The run still ends in an error (final/ is never written with NaN weights); the doctor reads what it left.
    with pytest.raises(ScratchLMError, match="NaN or Inf"):
        train(tmp_path, texts / "plays.txt", 40, **{**HUGE_LR, "train.eval_interval": 40, "train.guard": False})
    run = tmp_path / "run"
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


@pytest.mark.slow  # a real run until greedy samples loop (the detector on a fixed sample is the test below)
def test_narrow_model_with_greedy_sampling_repeats(tmp_path, texts):
    # two evaluations (steps 20, 40); stopped before the 16-wide model's plateau at the unigram level
    # (from step ~35) could count as "not decreasing" (three windows of 10 steps after warm-up)
    run, _ = train(tmp_path, texts / "plays.txt", 40, **{"model.n_embd": 16, "model.n_head": 2, "train.eval_interval": 20,
                                                          "sample.temperature": 0.0})
    assert fired(run) == ["repetition"]
    f = findings(run)["repetition"]
    # greedy sampling is named first, the width second; the temperature is in the evidence
    assert f["cause"].startswith("sampling is greedy (temperature 0)") and "n_embd = 16" in f["cause"]
    assert "temperature 0" in f["evidence"] and "--sample.temperature 0.8" in f["fix"]


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
    _, summary = train(tmp_path, texts / "plays.txt", 10_000_000, events=events, **{"train.eval_interval": 1_000_000})
    assert summary["stopped_by"] == "signal"
    assert fired(tmp_path / "run") == ["slow"]
    f = findings(tmp_path / "run")["slow"]
    assert f["numbers"]["tokens_per_s"] < 12_800 and f["numbers"]["total_hours"] > 24
    assert "torch.compile" in f["fix"]


def test_val_loss_rising_while_train_loss_falls_fires_overfitting_only():
    """The detector on records (the real run that memorises 3 KB of text is the slow test below)."""
    d = Doctor(RunInfo(vocab_size=65, max_steps=400, warmup_steps=5))
    val = [3.0, 2.4, 2.2, 2.3, 2.45, 2.6, 2.8]
    for i, v in enumerate(val):
        for s in range(i * 25 + 1, (i + 1) * 25 + 1):
            d.step(rec(s, math.log(65) - 0.006 * s))  # training loss falls all along, from ln(vocab)
        d.eval({"step": (i + 1) * 25, "val_loss": v, "val_bpb": v / math.log(2)})
    assert [f.key for f in d.findings] == ["overfitting"]
    assert d.findings[0].step > 75  # after the best evaluation, once the rise persists


@pytest.mark.slow  # 400 steps with an evaluation and a sample every 25: about 30 s alone, 100 s beside other tests
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
    run_training(cfg, run, overwrite=True)  # no events: no live doctor
    assert not (run / "diagnostics.jsonl").exists()
    # simulate a crash: no final checkpoint, a half-written last line
    import shutil

    shutil.rmtree(run / "checkpoints" / "final")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 41, "loss": 4.3')
    capsys.readouterr()
    assert doctor_main([str(run)]) == 1  # the flat loss is found from metrics.jsonl alone
    out = capsys.readouterr().out
    assert "not finished" in out and "learning rate too low" in out  # no ratio recorded: judged from lr 1e-7
    row = next(line for line in out.splitlines() if line.startswith("[--] Model repeats gibberish"))
    assert "not measurable" in row  # no samples without the live doctor
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


def test_initial_loss_is_not_expected_from_trained_weights():
    """Fine-tuning and --init-from start from a trained model: a first loss far below ln(vocab) is the point."""
    d = Doctor(RunInfo(vocab_size=2051, max_steps=100, from_weights=True))
    d.step({"step": 1, "loss": 2.0, "lr": 1e-4, "grad_norm": 1.0, "tokens_per_s": 1e5, "time": 0.0})
    assert d.findings == []
    status, evidence = d.by_key()["initial_loss"].status()
    assert "trained weights" in evidence
    # its repetition probe samples plain text: a fine-tuned model that loops there has drifted, it is not "narrow"
    for step in (100, 200):
        d.probe({"kind": "repetition", "step": step, "rep": 0.98, "ref_rep": 0.17, "distinct": 0.02,
                 "ref_distinct": 0.9, "text": "<|end|>IIIIIIII"})
    assert [f.key for f in d.findings] == ["repetition"] and "forgetting" in d.findings[0].cause


def test_rewound_records_after_a_resume_are_dropped():
    recs = [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4)] + [{"event": "resume", "step": 2}] + [{"step": s, "loss": 2.0} for s in (3, 4, 5)]
    kept = [(r["step"], r.get("loss")) for r in drop_rewound(recs) if "loss" in r]
    assert kept == [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 2.0)]


def rec(step, loss, lr=1e-3, gn=1.0, **kw):
    """A step record as the loop emits it."""
    return {"step": step, "loss": loss, "lr": lr, "grad_norm": gn, "clipped": gn > 1.0, "skipped": None,
            "tokens_per_s": 1e5, "time": step * 0.01, **kw}


def flat(d, steps, lr):
    for s in range(1, steps + 1):  # at ln(65) ± noise: nothing learned
        d.step(rec(s, math.log(65) + 0.01 * (-1) ** s, lr=lr))


def test_flat_loss_at_a_low_lr_without_ratios_is_too_low():
    d = Doctor(RunInfo(vocab_size=65, max_steps=100, warmup_steps=5, lr=3e-5))
    flat(d, 40, 3e-5)  # no update ratios: trained without the live doctor
    assert [f.key for f in d.findings] == ["not_decreasing"]
    f = d.findings[0]
    assert f.numbers["verdict"] == "too low" and f.numbers["update_ratio"] is None
    assert "peak lr 3.0e-05 < 0.0001" in f.evidence and "raise the learning rate" in f.fix


def test_flat_loss_without_evidence_says_it_cannot_tell():
    d = Doctor(RunInfo(vocab_size=65, max_steps=100, warmup_steps=5, lr=2e-3))
    flat(d, 40, 2e-3)  # a usual lr, steady small gradients, no ratio: no sign either way
    f = d.findings[0]
    assert f.numbers["verdict"] == "cannot tell"
    assert "too high or too low" in f.symptom and "sweep lr" in f.fix


def test_lr_too_high_real_run(tmp_path, texts):
    # lr 0.1 on the small model: the loss falls to the unigram level (~3.3 nats) in a few steps and hovers there
    run, _ = train(tmp_path, texts / "plays.txt", 150, **{"train.lr": 0.1, "train.warmup_steps": 10, "train.eval_interval": 150})
    assert fired(run) == ["not_decreasing"]
    f = findings(run)["not_decreasing"]
    assert f["numbers"]["verdict"] == "too high" and "unigram level" in f["evidence"]
    assert "lower the learning rate" in f["fix"]


def test_growing_gradients_with_clipping_fire_exploding_while_finite():
    d = Doctor(RunInfo(vocab_size=65, max_steps=100, warmup_steps=5, grad_clip=1.0, lr=1e-2))
    for s in range(1, 60):  # the loss still falls and stays finite; the clipped gradient norm grows 1.3× per step
        d.step(rec(s, math.log(65) - 0.02 * s, lr=1e-2, gn=0.8 if s <= 20 else 0.8 * 1.3 ** (s - 20)))
    assert [f.key for f in d.findings] == ["exploding"]
    f = d.findings[0]
    assert f.numbers["growth"] >= 10 and f.numbers["clip_rate"] == 1.0
    assert "gradient norm grew" in f.evidence and "clip rate 100%" in f.evidence and "clipping is at 1" in f.cause


def test_low_mfu_on_a_gpu_fires_too_slow():
    d = Doctor(RunInfo(vocab_size=65, max_steps=100, tokens_per_step=256, warmup_steps=5, device="cuda", dtype="bf16"))
    for s in range(1, 51):  # fast enough for the budget, but the GPU does useful work 1% of the time
        d.step(rec(s, math.log(65) - 0.02 * s, mfu=0.01))
    assert [f.key for f in d.findings] == ["slow"] and d.findings[0].step == 50
    f = d.findings[0]
    assert "1.0% of the time (< 5%)" in f.evidence and "torch.compile" in f.fix and "bf16 autocast" not in f.fix


def test_initial_loss_below_ln_vocab_is_a_label_leak():
    d = Doctor(RunInfo(vocab_size=65, max_steps=100))
    d.step(rec(1, 0.5))
    assert [f.key for f in d.findings] == ["initial_loss"]
    assert "leak" in d.findings[0].cause and d.findings[0].numbers["gap"] < -3


def test_bad_init_fires_initial_loss_and_prints_the_message(tmp_path, texts, capsys):
    def blow_up_init(info):  # weights ×30 before the first step: logits far too large
        for p in info["trainer"].raw_model.parameters():
            if p.dim() >= 2:
                p.data.mul_(30)

    events = Events()
    events.on("train_start", blow_up_init)  # before the doctor's own train_start handler
    capsys.readouterr()
    run, _ = train(tmp_path, texts / "plays.txt", 3, events=events, quiet=False, **{"train.eval_interval": 3})
    assert fired(run) == ["initial_loss"]
    out = capsys.readouterr().out
    lines = out.splitlines()
    i = lines.index("doctor: initial loss far from ln(vocab size) (step 1)")
    assert lines[i + 1].startswith("  evidence: step-1 loss") and "vs ln(" in lines[i + 1]
    assert lines[i + 2].startswith("  likely cause: the initial logits are too large")
    assert lines[i + 3].startswith("  fix: check the weight initialisation")
    assert "doctor: 1 problem(s) found" in out


def test_rollback_rewinds_the_live_board_and_drops_later_findings():
    got = []
    d = Doctor(RunInfo(vocab_size=65, max_steps=100, warmup_steps=5), on_finding=got.append)
    for s in range(1, 29):
        d.step(rec(s, math.log(65) - 0.01 * s))
    d.step(rec(29, float("nan"), gn=float("inf")))
    assert [f.key for f in d.findings] == ["exploding"]
    for s in range(21, 41):  # the guard rolled back to the checkpoint at step 20
        d.step(rec(s, math.log(65) - 0.01 * s))
    assert [r["step"] for r in d.board.steps] == list(range(1, 41))  # each step once
    assert d.findings == [] and "exploding" not in d.board.fired and len(got) == 1  # nothing re-announced


def test_doctor_drops_findings_recorded_after_a_rewind(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = to_dict(build_config("tiny", overrides={"data.tokenizer": "char", "model.vocab_size": 65}))
    (run / "config.json").write_text(json.dumps(cfg))
    with open(run / "metrics.jsonl", "w") as f:
        for s in [*range(1, 31), *range(21, 41)]:  # steps 21-30 redone after a rollback to step 20
            f.write(json.dumps(rec(s, math.log(65) - 0.01 * s)) + "\n")
    boom = {"kind": "finding", "key": "exploding", "symptom": "loss is NaN / exploding gradients", "step": 29,
            "evidence": "non-finite loss", "cause": "c", "fix": "f", "numbers": {}}
    (run / "diagnostics.jsonl").write_text(json.dumps(boom) + "\n")
    assert diagnose(run)["problems"] == ["exploding"]  # recorded live, and no rewind marked
    with open(run / "diagnostics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "rewind", "step": 20}) + "\n")
    assert diagnose(run)["problems"] == []  # it belonged to the history the rollback discarded


def test_guard_rollbacks_are_marked_and_only_the_final_history_counts(tmp_path, texts, capsys):
    # lr 10 without clipping: NaN within a few steps, and the guard rolls back to the step-0
    # checkpoint at each; after three rollbacks it gives up, unless a later attempt gets through
    try:
        train(tmp_path, texts / "plays.txt", 40, **{**HUGE_LR, "train.guard_max_bad": 1})
    except ScratchLMError as e:
        assert "rollbacks" in str(e)
    assert "internal error" not in capsys.readouterr().out  # the live doctor followed the rewinds
    run = tmp_path / "run"
    diag = read_jsonl(run / "diagnostics.jsonl")
    rewinds = [r["step"] for r in diag if r.get("kind") == "rewind"]
    assert rewinds and set(rewinds) == {0}
    # every attempt found the explosion again; only the last attempt's finding is in the final history
    assert [r["key"] for r in diag if r.get("kind") == "finding"] == ["exploding"] * (len(rewinds) + 1)
    assert [r["key"] for r in drop_rewound(diag) if r.get("kind") == "finding"] == ["exploding"]
    ratios = [p["step"] for p in drop_rewound(read_jsonl(run / "probes.jsonl")) if p.get("kind") == "update_ratio"]
    assert ratios == sorted(set(ratios))


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '{"model": {}}'])
def test_doctor_refuses_a_config_that_is_not_a_run_config(tmp_path, content, capsys):
    (tmp_path / "config.json").write_text(content)
    assert doctor_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_doctor_skips_an_absurdly_nested_metrics_line(tmp_path, capsys):
    cfg = build_config("tiny")
    (tmp_path / "config.json").write_text(json.dumps(to_dict(cfg)))
    (tmp_path / "metrics.jsonl").write_text("[" * 200_000 + "]" * 200_000 + "\n"
                                            + json.dumps({"step": 1, "loss": 6.2, "lr": 1e-3}) + "\n")
    assert doctor_main([str(tmp_path)]) in (0, 1)  # a report, not a traceback
    assert "run " in capsys.readouterr().out
