"""The NaN and loss-spike guard: bad steps are skipped (no update), and a streak of them
rolls the run back to the last good checkpoint, past the offending batches.

NaNs and spikes are injected by wrapping the model's forward pass: the loss of chosen
data positions is multiplied by NaN (or by 30, a spike)."""

import json
import math
import random

import pytest
import torch

from scratchlm.cli import main
from scratchlm.config import build_config
from scratchlm.data.corpus import load_corpus
from scratchlm.data.dataset import Batches, tokenize_corpus
from scratchlm.errors import ScratchLMError
from scratchlm.model import GPT
from scratchlm.tokenizer import load_tokenizer, tokenizer_hash
from scratchlm.train import checkpoint as ckpt
from scratchlm.train import run_training
from scratchlm.train.events import Events
from scratchlm.train.guard import Guard, SpikeGuard
from scratchlm.train.optim import lr_at

SMALL = {"data.tokenizer": "char", "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.block_size": 32,
         "train.batch_size": 8, "train.warmup_steps": 2, "train.eval_tokens": 512, "train.dtype": "fp32",
         "train.device": "cpu", "train.compile": False, "sample.num_samples": 0}


def small_cfg(corpus, **over):
    return build_config("tiny", overrides={**SMALL, "data.path": str(corpus), **over})


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def poison(monkeypatch):
    """{data position: 'nan' | 'spike'}: training losses at those positions are poisoned."""
    bad: dict[int, str] = {}
    where = {"pos": None}
    get, forward = Batches.get, GPT.forward

    def spy_get(self, step, micro, batch):
        where["pos"] = step  # the loop passes the data position (step + data_skip)
        return get(self, step, micro, batch)

    def poisoned_forward(self, idx, targets=None, **kw):
        logits, loss = forward(self, idx, targets, **kw)
        kind = bad.get(where["pos"]) if (self.training and loss is not None) else None
        if kind == "nan":
            loss = loss * float("nan")
        elif kind == "spike":
            loss = loss * 30.0
        return logits, loss

    monkeypatch.setattr(Batches, "get", spy_get)
    monkeypatch.setattr(GPT, "forward", poisoned_forward)
    return bad


# ---- the detector on its own -----------------------------------------------------

def test_non_finite_loss_or_grad_norm_is_bad():
    g = SpikeGuard(window=10, k=6)
    assert g.check(float("nan"), 1.0) == "non-finite loss"
    assert g.check(float("inf"), 1.0) == "non-finite loss"
    assert g.check(2.0, float("nan")) == "non-finite gradient norm"
    assert g.check(2.0, float("inf")) == "non-finite gradient norm"
    assert list(g.losses) == []  # bad values never enter the window


def test_spike_threshold_is_k_standard_deviations_over_the_window():
    rng = random.Random(0)
    g = SpikeGuard(window=50, k=4)
    noise = [3.0 + rng.gauss(0, 0.05) for _ in range(500)]
    assert [g.check(x, 1.0) for x in noise].count(None) == 500  # ordinary noise: never flagged
    window = list(g.losses)
    mean = sum(window) / len(window)
    std = math.sqrt(sum((x - mean) ** 2 for x in window) / len(window))
    assert g.check(mean + 3.9 * std, 1.0) is None  # below the bar: fine (and it joins the window)
    window = list(g.losses)
    mean = sum(window) / len(window)
    std = math.sqrt(sum((x - mean) ** 2 for x in window) / len(window))
    reason = g.check(mean + 4.1 * std, 1.0)
    assert reason and reason.startswith("loss spike")
    assert list(g.losses) == window  # the spike does not raise the bar for the next one


def test_a_gradient_norm_spike_is_bad_too_with_the_same_k():
    rng = random.Random(1)
    g = SpikeGuard(window=30, k=5)
    for _ in range(100):  # steady loss and gradient norm: never flagged
        assert g.check(3.0 + rng.gauss(0, 0.05), 0.5 * math.exp(rng.gauss(0, 0.04))) is None
    logs = [math.log(x) for x in g.norms]
    mean = sum(logs) / len(logs)
    std = max(math.sqrt(sum((x - mean) ** 2 for x in logs) / len(logs)), 0.25)  # the floor binds here
    # a healthy run's norm may triple within a few steps: below the bar (e^(5·0.25) ≈ 3.5×)
    assert g.check(3.0, math.exp(mean + 4.9 * std)) is None
    norms, losses = list(g.norms), list(g.losses)
    logs = [math.log(x) for x in norms]
    mean = sum(logs) / len(logs)
    std = max(math.sqrt(sum((x - mean) ** 2 for x in logs) / len(logs)), 0.25)
    reason = g.check(3.0, math.exp(mean + 5.1 * std))  # an ordinary loss, but the gradient norm jumps
    assert reason and reason.startswith("gradient norm spike")
    assert list(g.norms) == norms and list(g.losses) == losses  # a bad step joins neither window
    assert g.check(3.0, 1e3).startswith("gradient norm spike")  # an explosion, whatever the window
    # and a resumed run judges it the same way: both windows are in the checkpointed state
    tc = build_config("tiny", overrides={"train.guard_window": 30, "train.guard_k": 5.0}).train
    a, b = Guard(tc), Guard(tc)
    a.spikes = g
    b.load_state_dict(a.state_dict())
    assert list(b.spikes.norms) == norms and b.check(3.0, math.exp(mean + 5.1 * std)).startswith("gradient norm spike")


def test_a_rising_gradient_norm_is_not_a_spike():
    """Measured on Tiny Shakespeare (lr 6e-3): the norm went 0.58 -> 1.59 within a few
    steps while training was healthy; a linear-scale k·std test rolled the run back."""
    g = SpikeGuard(window=50, k=6)
    for i in range(50):
        assert g.check(2.5, 0.58 + 0.002 * (i % 5)) is None
    assert g.check(2.5, 1.59) is None


def test_no_spike_verdict_before_the_window_has_enough_history():
    g = SpikeGuard(window=50, k=3)  # min_history = 20
    for _ in range(19):
        assert g.check(1.0, 1.0) is None
    assert g.check(100.0, 1.0) is None  # 19 losses: too few to judge
    assert g.check(100.0, 1.0).startswith("loss spike")


def test_guard_counts_bad_steps_in_a_row_and_can_be_disabled():
    tc = build_config("tiny", overrides={"train.guard_max_bad": 2}).train
    g = Guard(tc)
    assert g.check(float("nan"), 1.0) and not g.must_roll_back
    assert g.check(1.0, 1.0) is None and g.streak == 0  # a good step ends the streak
    g.check(float("nan"), 1.0)
    g.check(float("nan"), 1.0)
    assert g.must_roll_back
    tc.guard = False
    off = Guard(tc)
    assert off.check(float("nan"), float("nan")) is None and not off.must_roll_back


# ---- in a real training run ------------------------------------------------------

def _watch_weights(events: Events) -> dict:
    """step -> a copy of the token embedding after that step."""
    seen, trainer = {}, {}
    events.on("train_start", lambda info: trainer.update(t=info["trainer"]))
    events.on("step_end", lambda info: seen.__setitem__(info["step"], trainer["t"].raw_model.transformer.wte.weight.detach().clone()))
    return seen


def test_nan_and_spike_steps_are_skipped_without_touching_the_weights(tmp_path, small_corpus, poison):
    poison[6] = "nan"  # read by step 7
    poison[14] = "spike"  # read by step 15, once the 10-step window is full
    events = Events()
    weights = _watch_weights(events)
    run = tmp_path / "run"
    summary = run_training(small_cfg(small_corpus, **{"train.max_steps": 18, "train.eval_interval": 100, "train.guard_window": 10,
                                                     "train.guard_k": 6.0}), run, events=events)
    steps = {r["step"]: r for r in records(run) if "loss" in r}
    assert steps[7]["skipped"] == "non-finite loss"
    assert steps[15]["skipped"].startswith("loss spike")
    assert [s for s, r in steps.items() if r["skipped"]] == [7, 15]
    for s in (7, 15):  # a skipped step leaves the weights exactly as they were; its neighbours move them
        assert torch.equal(weights[s], weights[s - 1])
        assert not torch.equal(weights[s + 1], weights[s])
    assert math.isfinite(summary["val_loss"]) and summary["step"] == 18
    assert not any(r.get("event") == "rollback" for r in records(run))


def test_a_streak_of_bad_steps_rolls_back_to_the_last_checkpoint_and_skips_past_it(tmp_path, small_corpus, poison):
    for pos in (12, 13, 14):  # steps 13, 14, 15 go bad: the third in a row triggers a rollback to step 10
        poison[pos] = "nan"
    run = tmp_path / "run"
    cfg = small_cfg(small_corpus, **{"train.max_steps": 20, "train.eval_interval": 100, "train.checkpoint_interval": 5,
                                     "train.keep_last": 10, "train.guard_max_bad": 3, "train.guard_lr_factor": 0.5})
    summary = run_training(cfg, run)
    recs = records(run)
    rb = [r for r in recs if r.get("event") == "rollback"]
    assert len(rb) == 1
    assert rb[0] | {"reason": None} == {"event": "rollback", "reason": None, "from_step": 15, "to_step": 10,
                                        "checkpoint": "step_0000010", "data_skip": 5, "lr_scale": 0.5}
    after = recs[recs.index(rb[0]) + 1]
    assert after["step"] == 11 and after["skipped"] is None
    # reference: the step after the rollback is the checkpoint's weights on data position 15,
    # at half the learning rate the schedule gives for step 10
    state, sd, _ = ckpt.load_checkpoint(run / "checkpoints" / "step_0000010", with_trainer=False)
    assert after["lr"] == pytest.approx(0.5 * lr_at(10, 10 / 20, state["warmup_end_progress"], cfg.train))
    model = GPT(cfg.model)
    ckpt.load_model_weights(model, sd, "step_0000010")
    model.train()
    tok = load_tokenizer(run / "tokenizer.json")
    ids = tokenize_corpus(load_corpus(str(small_corpus), cfg.data.val_fraction), tok, tokenizer_hash(tok))
    x, y = Batches(ids["train"], 32, "cpu", cfg.train.seed).get(15, 0, 8)
    with torch.no_grad():
        _, ref_loss = GPT.forward(model, x, y)
    assert after["loss"] == pytest.approx(ref_loss.item(), rel=1e-6)
    assert summary["step"] == 20 and math.isfinite(summary["val_loss"])
    assert json.loads((run / "checkpoints" / "final" / "state.json").read_text())["data_position"] == {"step": 20, "skip": 5}


def test_endless_divergence_gives_up_with_one_clear_line(tmp_path, small_corpus, poison, capsys):
    for pos in range(3, 200):
        poison[pos] = "nan"
    rc = main(["train", "--preset", "tiny", "--data", str(small_corpus), "--out", str(tmp_path / "run"), "--quiet", "--max-steps", "50",
               *[f"--{k}={v}" for k, v in SMALL.items()], "--train.guard_max_bad", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: training diverges again after 3 rollbacks") and "\n" not in err
    assert "lower --train.lr" in err


def test_without_the_guard_a_nan_poisons_the_weights(tmp_path, small_corpus, poison):
    poison[3] = "nan"  # the reference for the tests above: this is what the guard prevents
    run = tmp_path / "run"
    with pytest.raises(ScratchLMError, match=r"the weights hold NaN or Inf at step 6, so final/ was not written"):
        run_training(small_cfg(small_corpus, **{"train.max_steps": 6, "train.eval_interval": 100, "train.guard": False}),
                     run)
    losses = [r["loss"] for r in records(run) if "loss" in r]
    assert all(math.isfinite(v) for v in losses[:3]) and all(math.isnan(v) for v in losses[3:])
    assert not (run / "checkpoints" / "final").exists()  # a broken model is never saved as the result
    assert any("not written" in r.get("message", "") for r in records(run))  # nor as a step checkpoint
