"""Detectors: one small class per training symptom, fed the metrics the loop emits.

Each detector watches a stream of records, the same whether they arrive live (as
events during training) or are replayed from a run folder's files afterwards:

    step   {"step", "loss", "lr", "grad_norm", "clipped", "skipped", "tokens_per_s", "time", ["mfu"]}
    eval   {"step", "val_loss", "val_bpb"}
    probe  measurements the live doctor adds (probes.jsonl):
           {"kind": "update_ratio", "step", "update_ratio"}   ‖ΔW‖ / ‖W‖ of one optimizer step
           {"kind": "repetition", "step", "rep", "distinct", "ref_rep", "ref_distinct", "text"}

When a detector recognises its symptom it returns a `Finding` — once per run — that
names the symptom, the evidence (numbers), the likely cause and the fix. Between
findings it keeps a one-line `summary` of what it measured, so `scratchlm doctor`
can say "not seen" with evidence, or "not measurable" and why.

Every threshold lives in `Thresholds` with the runs that calibrated it; see
docs/troubleshooting.md for the measured figures.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import asdict, dataclass, field

SEEN, NOT_SEEN, NOT_MEASURABLE = "seen", "not seen", "not measurable"


@dataclass
class Thresholds:
    """Decision thresholds. The comments give the calibration (tiny preset, char tokenizer,
    built-in Shakespeare, 2-core CPU; docs/troubleshooting.md has the full table)."""

    # initial loss: a healthy init predicts ~uniformly, loss ≈ ln(vocab). Healthy runs
    # started 0.04–0.07 nats above ln(V); a bad init (std 1 instead of 0.02) starts ≥ 5 nats above.
    initial_tol: float = 0.5  # nats away from ln(V)
    # loss not decreasing: judged on windows of W steps after warm-up
    window_min: int = 10
    window_max: int = 50
    stuck_drop: float = 0.1  # less than this many nats below the first loss after ≥ 2 windows: nothing learned
    rise_margin: float = 0.1  # window mean this far above the best window mean: the loss is climbing
    # unigram level: the entropy of the token frequencies, the loss of a model that ignores
    # context (char Shakespeare: 3.32 nats). lr 0.05 hovered at 3.1-3.4 for 100+ steps;
    # healthy runs (lr 2e-3) pass it within one window and reach 2.5 by step 100.
    unigram_margin: float = 0.1
    unigram_windows: int = 3  # windows after warm-up before being stuck there counts
    # update-to-weight ratio ‖ΔW‖/‖W‖ per step: healthy runs 2e-3–2e-2; lr 1e-7 gives ~1e-6
    ratio_low: float = 1e-4
    ratio_high: float = 0.1  # lr 1.0 gave ≥ 0.2
    # exploding gradients: grad-norm median of the last window vs the lowest window median so far.
    # Healthy runs: the median falls (≈5 → 0.8); lr 1.0: it grows by 30–1000×.
    explode_factor: float = 10.0
    blowup_nats: float = 1.0  # window mean this far above the first loss: diverged
    # repetition: fraction of repeated 4-grams in a sample minus the same in real validation text
    rep_n: int = 4
    rep_excess: float = 0.25
    rep_persist: int = 2  # consecutive evaluations
    narrow_embd: int = 384  # the troubleshooting table's "128 → 384"
    # too slow: projected wall-clock for the planned budget
    slow_hours: float = 24.0
    slow_after_steps: int = 10  # the first steps include warm-up work (allocation, compile)
    mfu_low: float = 0.05  # on a GPU, < 5% of peak FLOPs means the GPU mostly waits
    # overfitting: validation loss above its best while training loss keeps falling
    overfit_margin: float = 0.02  # nats above the best validation loss
    overfit_persist: int = 2  # consecutive evaluations


@dataclass
class RunInfo:
    """What the detectors need to know about the run (from the trainer or config.json)."""

    vocab_size: int
    n_embd: int = 0
    n_params: int = 0
    max_steps: int = 0
    max_time: float = 0.0
    tokens_per_step: int = 0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    lr: float = 0.0
    device: str = "cpu"
    dtype: str = "fp32"
    world: int = 1
    compile: bool = False
    unigram_loss: float | None = None  # entropy of the training tokens' frequencies (nats)

    @classmethod
    def from_config(cls, cfg: dict, **extra) -> "RunInfo":
        m, t = cfg["model"], cfg["train"]
        return cls(vocab_size=m["vocab_size"], n_embd=m["n_embd"], max_steps=t["max_steps"], max_time=t["max_time"],
                   tokens_per_step=t["batch_size"] * m["block_size"], warmup_steps=t["warmup_steps"],
                   grad_clip=t["grad_clip"], lr=t["lr"], compile=t["compile"],
                   device=extra.pop("device", t["device"]), dtype=extra.pop("dtype", t["dtype"]), **extra)


@dataclass
class Finding:
    key: str  # the detector (a row of the troubleshooting table)
    symptom: str
    step: int
    evidence: str
    cause: str
    fix: str
    numbers: dict = field(default_factory=dict)

    def message(self) -> str:
        return (f"doctor: {self.symptom} (step {self.step})\n"
                f"  evidence: {self.evidence}\n"
                f"  likely cause: {self.cause}\n"
                f"  fix: {self.fix}")

    def to_json(self) -> dict:
        return {"kind": "finding", **asdict(self)}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


class Detector:
    """Base class: feed records in, get at most one Finding out."""

    key = ""
    symptom = ""
    row = ""  # the troubleshooting table's wording

    def __init__(self, run: RunInfo, th: Thresholds):
        self.run, self.th = run, th
        self.finding: Finding | None = None
        self.measured = False
        self.summary = "no data"

    def on_step(self, rec: dict, board: "Board") -> Finding | None:
        return None

    def on_eval(self, rec: dict, board: "Board") -> Finding | None:
        return None

    def on_probe(self, rec: dict, board: "Board") -> Finding | None:
        return None

    def on_end(self, board: "Board") -> Finding | None:
        return None

    def status(self) -> tuple[str, str]:
        if self.finding:
            return SEEN, self.finding.evidence
        return (NOT_SEEN if self.measured else NOT_MEASURABLE), self.summary


class Board:
    """What all detectors can see: the step history so far and which detectors fired."""

    def __init__(self, run: RunInfo, th: Thresholds):
        self.steps: list[dict] = []
        self.fired: set[str] = set()
        self.update_ratios: deque[tuple[int, float]] = deque(maxlen=20)
        # windows of W steps: a tenth of the run, within [window_min, window_max]
        self.window = min(th.window_max, max(th.window_min, run.max_steps // 10))

    def first_loss(self) -> float | None:
        return self.steps[0]["loss"] if self.steps and self.steps[0]["step"] == 1 else None

    def recent_ratio(self) -> float | None:
        vals = [r for _, r in self.update_ratios]
        return statistics.median(vals) if vals else None


# ---------------------------------------------------------------------------
class InitialLoss(Detector):
    """The first step's loss should be ≈ ln(vocab size): an untrained model spreads its
    probability evenly. Far above: a bad initialisation (logits too large). Far below:
    the model can see the answer (a label/shift bug, e.g. targets equal to inputs)."""

    key, symptom, row = "initial_loss", "initial loss far from ln(vocab size)", "Initial loss far from ln(vocab)"

    def on_step(self, rec, board):
        if self.measured or rec["step"] != 1:
            if not self.measured and rec["step"] > 1:
                self.summary = "the run's first step is not in the record (resumed run)"
            return None
        self.measured = True
        loss, expect = rec["loss"], math.log(self.run.vocab_size)
        gap = loss - expect if _finite(loss) else float("inf")
        self.summary = f"step-1 loss {loss:.3f} vs ln({self.run.vocab_size}) = {expect:.3f} (gap {gap:+.3f}, tolerance ±{self.th.initial_tol:g})"
        if abs(gap) <= self.th.initial_tol:
            return None
        if gap > 0:
            cause = "the initial logits are too large: weights initialised with too big a scale (GPT-2 uses std 0.02)"
            fix = "check the weight initialisation (std 0.02; residual projections scaled by 1/sqrt(2·n_layer)) and that the LM head is not scaled up"
        else:
            cause = "the model predicts better than chance before training: the targets leak into the inputs (labels not shifted by one, or a non-causal mask)"
            fix = "check that targets are the inputs shifted by one token and that attention is causal"
        return Finding(self.key, self.symptom, 1, self.summary, cause, fix, {"loss": loss, "ln_vocab": expect, "gap": gap})


class Exploding(Detector):
    """NaN/Inf, or gradients growing without bound: the gradient norm's window median
    rises far above its lowest value, or the loss climbs far above where it started."""

    key, symptom, row = "exploding", "loss is NaN / exploding gradients", "Loss is NaN"

    def __init__(self, run, th):
        super().__init__(run, th)
        self.min_gn_median = float("inf")
        self.nonfinite = 0

    def on_step(self, rec, board):
        self.measured = True
        step, loss, gn = rec["step"], rec["loss"], rec["grad_norm"]
        steps = board.steps
        clip_rate = sum(bool(r.get("clipped")) for r in steps[-board.window:]) / min(len(steps), board.window)
        skipped = sum(bool(r.get("skipped")) for r in steps)
        if not (_finite(loss) and _finite(gn)):
            self.nonfinite += 1
            what = "loss" if not _finite(loss) else "gradient norm"
            ev = (f"non-finite {what} at step {step} (loss {loss}, grad norm {gn}); {skipped} step(s) skipped by the spike guard so far; "
                  f"lr {rec['lr']:.2e}")
            return self._fire(step, ev, {"loss": loss, "grad_norm": gn, "lr": rec["lr"], "skipped": skipped})
        W = board.window
        if len(steps) >= W:
            window = [r["grad_norm"] for r in steps[-W:] if _finite(r["grad_norm"])]
            med = statistics.median(window) if window else float("nan")
            # growth is judged once there is a window to compare with (2W steps, past warm-up)
            judged = len(steps) >= 2 * W and step > self.run.warmup_steps
            growth = med / self.min_gn_median if judged and self.min_gn_median > 0 else 1.0
            mean_loss = statistics.fmean(r["loss"] for r in steps[-W:])
            first = board.first_loss()
            self.summary = (f"grad norm median {med:.3g} over the last {W} steps"
                            + (f" ({growth:.1f}× its lowest window median {self.min_gn_median:.3g})" if judged else "")
                            + f"; clip rate {clip_rate:.0%}; {skipped} skipped step(s); no NaN/Inf")
            nums = {"grad_norm_median": med, "growth": growth, "clip_rate": clip_rate, "lr": rec["lr"], "skipped": skipped}
            if growth >= self.th.explode_factor:
                return self._fire(step, f"gradient norm grew {growth:.0f}× (window median {self.min_gn_median:.3g} → {med:.3g}); "
                                        f"clip rate {clip_rate:.0%}; lr {rec['lr']:.2e}", nums)
            if first is not None and mean_loss > first + self.th.blowup_nats:
                nums["loss_mean"] = mean_loss
                return self._fire(step, f"loss diverged: mean {mean_loss:.3f} over the last {W} steps vs {first:.3f} at step 1; "
                                        f"grad norm median {med:.3g}, clip rate {clip_rate:.0%}; lr {rec['lr']:.2e}", nums)
        if len(steps) >= W:
            window = [r["grad_norm"] for r in steps[-W:] if _finite(r["grad_norm"])]
            if window:
                self.min_gn_median = min(self.min_gn_median, statistics.median(window))
        if self.summary == "no data":
            self.summary = f"no NaN/Inf so far; grad norm {gn:.3g}"
        return None

    def _fire(self, step, evidence, nums):
        clip = f"clipping is at {self.run.grad_clip:g}" if self.run.grad_clip else "gradient clipping is off"
        return Finding(self.key, self.symptom, step, evidence,
                       f"exploding gradients: the learning rate ({self.run.lr:g} peak) is too high for this model, or the warm-up is too short; {clip}",
                       "lower the learning rate 3–10× (e.g. --train.lr 3e-4; `scratchlm sweep lr` finds the range), "
                       "keep --train.grad_clip 1.0, lengthen --train.warmup_steps; with fp16 use bf16 instead (--train.dtype bf16)", nums)


class NotDecreasing(Detector):
    """No meaningful drop in the loss. Tells "lr too low" (flat loss, tiny updates: the
    update-to-weight ratio is far below ~1e-3) from "lr too high" (the loss climbs or
    hovers with large gradients and large updates)."""

    key, symptom, row = "not_decreasing", "loss not decreasing", "Loss not decreasing"

    def __init__(self, run, th):
        super().__init__(run, th)
        self.best_mean = float("inf")
        self.rising = 0

    def on_step(self, rec, board):
        W, steps = board.window, board.steps
        past_warmup = [r for r in steps if r["step"] > self.run.warmup_steps]
        if len(past_warmup) < 2 * W or len(past_warmup) % W:
            if not self.measured:
                self.summary = f"needs {2 * W} steps after the {self.run.warmup_steps} warm-up steps"
            return None
        if "exploding" in board.fired:  # the explosion explains the loss; one finding, not two
            self.measured, self.summary = True, "not judged: the loss blew up (see the NaN / exploding row)"
            return None
        self.measured = True
        now = [r["loss"] for r in steps[-W:] if _finite(r["loss"])]
        before = [r["loss"] for r in steps[-2 * W:-W] if _finite(r["loss"])]
        if len(now) < 2 or len(before) < 2:
            return None
        m_now, m_before = statistics.fmean(now), statistics.fmean(before)
        # the drop between windows, against the noise of the two means
        se = math.sqrt(statistics.variance(now) / len(now) + statistics.variance(before) / len(before))
        first = board.first_loss() if board.first_loss() is not None else steps[0]["loss"]
        ratio = board.recent_ratio()
        gn = statistics.median(r["grad_norm"] for r in steps[-W:])
        clip_rate = sum(bool(r.get("clipped")) for r in steps[-W:]) / W
        self.summary = (f"loss {first:.3f} at the start → {m_now:.3f} (mean of the last {W} steps; previous window {m_before:.3f} ± {se:.3f})"
                        + (f"; update/weight ratio {ratio:.1e}" if ratio is not None else ""))
        nums = {"first_loss": first, "window_mean": m_now, "previous_window_mean": m_before, "noise": se,
                "update_ratio": ratio, "grad_norm_median": gn, "clip_rate": clip_rate, "lr": rec["lr"]}
        rising = m_now > self.best_mean + max(self.th.rise_margin, 2 * se)
        self.rising = self.rising + 1 if rising else 0
        self.best_mean = min(self.best_mean, m_now)
        stuck = m_now > first - self.th.stuck_drop
        flat = (m_before - m_now) < 2 * se  # no drop beyond the noise between the two windows
        uni = self.run.unigram_loss
        at_unigram = False
        if uni is not None and len(past_warmup) >= self.th.unigram_windows * W and m_now > uni - self.th.unigram_margin:
            # hovering: no drop beyond the noise over the last two windows (a slow but steady
            # descent through the unigram level, as narrow models make, is not a plateau)
            older = [r["loss"] for r in steps[-3 * W:-2 * W] if _finite(r["loss"])]
            at_unigram = len(older) >= 2 and statistics.fmean(older) - m_now < 2 * se
        if uni is not None:
            self.summary += f"; unigram level {uni:.3f}"
        too_low = ratio is not None and ratio < self.th.ratio_low
        too_high = self.rising >= 2 or (ratio is not None and ratio > self.th.ratio_high)
        if not (stuck or at_unigram or (flat and too_low) or self.rising >= 2):
            return None
        ev = self.summary + f"; grad norm median {gn:.3g}, clip rate {clip_rate:.0%}, lr {rec['lr']:.2e}"
        if too_low or (ratio is None and stuck and rec["lr"] < 1e-5):
            return Finding(self.key, self.symptom + ' — learning rate too low', rec["step"], ev,
                           "the learning rate is too low: each step changes the weights by a tiny fraction "
                           f"(update/weight ratio {ratio:.1e} vs ~1e-3 to 1e-2 in healthy runs)" if ratio is not None else
                           "the learning rate is too low: the loss is flat from the start",
                           "raise the learning rate (3e-4 is a good start for AdamW; the tiny preset uses 2e-3); "
                           "`scratchlm sweep lr` finds the range", nums | {"verdict": "too low"})
        if too_high or stuck or at_unigram:
            where = (f"; the loss hovers at the unigram level ({uni:.2f} nats: letter/token frequencies only, context ignored)"
                     if at_unigram else "")
            return Finding(self.key, self.symptom + ' — learning rate too high', rec["step"], ev + where,
                           "the learning rate is too high: updates overshoot, so the loss climbs or hovers instead of falling"
                           + (f" (update/weight ratio {ratio:.1e})" if ratio is not None else ""),
                           "lower the learning rate 3–10× (3e-4 is a good start for AdamW); `scratchlm sweep lr` finds the range",
                           nums | {"verdict": "too high"})
        return None


class Repetition(Detector):
    """At each evaluation the live doctor samples a short text and measures how much it
    repeats itself (fraction of repeated n-grams, distinct-n) against a stretch of real
    validation text of the same length. Persistent excess repetition: the model loops."""

    key, symptom, row = "repetition", "model repeats gibberish", "Model repeats gibberish"

    def __init__(self, run, th):
        super().__init__(run, th)
        self.history: list[dict] = []

    def on_probe(self, rec, board):
        if rec.get("kind") != "repetition":
            return None
        self.measured = True
        self.history.append(rec)
        excess = rec["rep"] - rec["ref_rep"]
        self.summary = (f"sample at step {rec['step']}: {rec['rep']:.0%} of {self.th.rep_n}-grams repeated, distinct-2 "
                        f"{rec['distinct']:.2f} (real text: {rec['ref_rep']:.0%}, {rec['ref_distinct']:.2f}); {len(self.history)} evaluation(s)")
        last = self.history[-self.th.rep_persist:]
        if len(last) < self.th.rep_persist or any(r["rep"] - r["ref_rep"] < self.th.rep_excess for r in last):
            return None
        reps = ", ".join(f"{r['rep']:.0%} at step {r['step']}" for r in last)
        narrow = self.run.n_embd and self.run.n_embd < self.th.narrow_embd
        cause = (f"the model is narrow (n_embd = {self.run.n_embd}): too little capacity to track context, so it falls into loops"
                 if narrow else "the model has not learned enough context to avoid loops (undertrained), or sampling is too greedy")
        fix = ((f"widen the model (e.g. --model.n_embd {max(2 * self.run.n_embd, self.th.narrow_embd)}), train longer, "
                "and sample with temperature 0.8–1.0 and top-p 0.95") if narrow else
               "train longer, or sample with a higher temperature (0.8–1.0) and top-p 0.95")
        text = rec.get("text", "")[:80].replace("\n", "⏎")
        ev = (f"{self.th.rep_n}-gram repetition {reps} vs {rec['ref_rep']:.0%} in real text (excess ≥ {self.th.rep_excess:.0%} "
              f"at {self.th.rep_persist} evaluations in a row); distinct-2 {rec['distinct']:.2f}; sample: {text!r}")
        return Finding(self.key, self.symptom, rec["step"], ev, cause, fix,
                       {"rep": rec["rep"], "ref_rep": rec["ref_rep"], "distinct": rec["distinct"], "excess": excess, "n_embd": self.run.n_embd})

    def on_end(self, board):
        if not self.measured:
            self.summary = "no samples measured (probes.jsonl missing: the run was trained without the live doctor)"
        return None


def speed_hints(run: RunInfo) -> list[str]:
    """What would make training faster on this hardware, with the usual gain."""
    hints = []
    if run.device.startswith("cuda"):
        if run.dtype == "fp32":
            hints.append("bf16 autocast (--train.dtype bf16): ~2-3× on tensor-core GPUs")
        if not run.compile:
            hints.append("torch.compile (--train.compile true): ~1.3-2×")
        hints.append(f"more GPUs with DDP (torchrun --nproc_per_node N scratchlm train ...): ~N× (now {run.world})")
    else:
        hints.append("a GPU: ~10-100× over a laptop CPU for models of this size")
        if run.dtype == "fp32":
            hints.append("bf16 autocast where the CPU supports it (--train.dtype bf16): ~1.2-2×")
        if not run.compile:
            hints.append("torch.compile (--train.compile true): ~1.2-1.5× on CPU")
    hints.append("a smaller model: compute per token ≈ 6 × parameters, so halving n_embd is ~3-4× faster")
    return hints


class TooSlow(Detector):
    """Tokens per second, model FLOPs utilisation (when the loop logs `mfu`) and the ETA of
    the planned budget: max_steps × tokens per step, or max_time if that ends first."""

    key, symptom, row = "slow", "training too slow", "Training takes weeks"

    def on_step(self, rec, board):
        step = rec["step"]
        if step < self.th.slow_after_steps or not self.run.tokens_per_step:
            if not self.measured:
                self.summary = f"needs {self.th.slow_after_steps} steps"
            return None
        recent = [r["tokens_per_s"] for r in board.steps[-20:] if _finite(r.get("tokens_per_s"))]
        if not recent:
            return None
        self.measured = True
        tok_s = statistics.median(recent)
        step_s = self.run.tokens_per_step / tok_s
        eta = (self.run.max_steps - step) * step_s
        if self.run.max_time:
            eta = min(eta, max(0.0, self.run.max_time - rec.get("time", 0.0)))
        total_h = (rec.get("time", 0.0) + eta) / 3600
        mfu = rec.get("mfu")
        self.summary = (f"{tok_s:,.0f} tokens/s ({step_s:.3g} s/step); planned budget ≈ {total_h:.2g} h, ETA {eta / 3600:.2g} h"
                        + (f"; MFU {mfu:.1%}" if _finite(mfu) else ""))
        slow = total_h > self.th.slow_hours
        gpu_idle = _finite(mfu) and self.run.device.startswith("cuda") and mfu < self.th.mfu_low and step >= 50
        if not (slow or gpu_idle):
            return None
        why = (f"the planned budget takes {total_h:.1f} h (> {self.th.slow_hours:g} h)" if slow
               else f"the GPU does useful work {mfu:.1%} of the time (< {self.th.mfu_low:.0%})")
        return Finding(self.key, self.symptom, step, self.summary + "; " + why,
                       f"too much work for this hardware at this speed ({self.run.device}, {self.run.dtype}, {self.run.world} device(s))",
                       "; ".join(speed_hints(self.run)) + "; or plan a smaller budget (--train.max_time SECONDS)",
                       {"tokens_per_s": tok_s, "eta_s": eta, "total_hours": total_h, "mfu": mfu})


class Overfitting(Detector):
    """Validation loss rising from its best while the training loss keeps falling: the model
    memorises the training text instead of learning what generalises."""

    key, symptom, row = "overfitting", "overfitting", "Validation loss rising (overfitting)"

    def __init__(self, run, th):
        super().__init__(run, th)
        self.evals: list[tuple[dict, float | None]] = []  # (eval record, mean train loss just before it)
        self.above = 0

    def on_eval(self, rec, board):
        if not _finite(rec.get("val_loss")):
            return None
        recent = [r["loss"] for r in board.steps[-board.window:] if _finite(r["loss"])]
        train = statistics.fmean(recent) if recent else None
        self.evals.append((rec, train))
        best_rec, best_train = min(self.evals, key=lambda e: e[0]["val_loss"])
        if len(self.evals) < 2:
            self.summary = f"one evaluation (val loss {rec['val_loss']:.3f}); needs {1 + self.th.overfit_persist}"
            return None
        self.measured = True
        best = best_rec["val_loss"]
        self.summary = (f"val loss {rec['val_loss']:.3f} at step {rec['step']}, best {best:.3f} at step {best_rec['step']}"
                        + (f"; train loss {best_train:.3f} → {train:.3f}" if train is not None and best_train is not None else "")
                        + f" ({len(self.evals)} evaluations)")
        falling = train is not None and best_train is not None and train < best_train
        self.above = self.above + 1 if rec["val_loss"] > best + self.th.overfit_margin and falling else 0
        if self.above < self.th.overfit_persist:
            return None
        gap = rec["val_loss"] - train
        return Finding(self.key, self.symptom, rec["step"],
                       self.summary + f"; val loss above its best for {self.above} evaluations; train/val gap {gap:.2f} nats",
                       "the model memorises the training text: too little data for this model size or too many steps",
                       "use more data, stop earlier (checkpoints/best/ holds the best model), add dropout (--model.dropout 0.1), "
                       "or use a smaller model",
                       {"val_loss": rec["val_loss"], "best_val_loss": best, "best_step": best_rec["step"], "train_loss": train,
                        "train_loss_at_best": best_train})

    def on_end(self, board):
        if not self.measured and not self.evals:
            self.summary = "no evaluation in the record"
        return None


DETECTORS = (InitialLoss, NotDecreasing, Exploding, Repetition, TooSlow, Overfitting)


class Doctor:
    """Routes records to every detector and keeps the findings (each fires once)."""

    def __init__(self, run: RunInfo, th: Thresholds | None = None, on_finding=None):
        self.run, self.th = run, th or Thresholds()
        self.board = Board(run, self.th)
        # the explosion detector runs first so "not decreasing" can defer to it
        order = (InitialLoss, Exploding, NotDecreasing, Repetition, TooSlow, Overfitting)
        self.detectors = [cls(run, self.th) for cls in order]
        self.findings: list[Finding] = []
        self.on_finding = on_finding

    def _collect(self, det: Detector, f: Finding | None) -> None:
        if f is None or det.finding is not None:
            return
        det.finding = f
        self.board.fired.add(det.key)
        self.findings.append(f)
        if self.on_finding:
            self.on_finding(f)

    def step(self, rec: dict) -> None:
        self.board.steps.append(rec)
        for d in self.detectors:
            if d.finding is None:
                self._collect(d, d.on_step(rec, self.board))

    def eval(self, rec: dict) -> None:
        for d in self.detectors:
            if d.finding is None:
                self._collect(d, d.on_eval(rec, self.board))

    def probe(self, rec: dict) -> None:
        if rec.get("kind") == "update_ratio" and _finite(rec.get("update_ratio")):
            self.board.update_ratios.append((rec["step"], rec["update_ratio"]))
        for d in self.detectors:
            if d.finding is None:
                self._collect(d, d.on_probe(rec, self.board))

    def end(self) -> None:
        for d in self.detectors:
            if d.finding is None:
                self._collect(d, d.on_end(self.board))

    def by_key(self) -> dict[str, Detector]:
        return {d.key: d for d in self.detectors}


# ---- repetition measures ---------------------------------------------------------
def repetition_stats(ids: list[int], n: int = 4) -> tuple[float, float]:
    """(rep-n, distinct-2) of a token sequence.
    rep-n: the fraction of n-grams that repeat an earlier n-gram of the same text
           ("abcabcabc", n=3: 7 trigrams, 3 different → 4/7 repeated);
    distinct-2: different bigrams / all bigrams (1.0 = no pair of tokens ever recurs)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    pairs = [tuple(ids[i:i + 2]) for i in range(len(ids) - 1)]
    rep = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
    distinct2 = len(set(pairs)) / len(pairs) if pairs else 1.0
    return rep, distinct2
