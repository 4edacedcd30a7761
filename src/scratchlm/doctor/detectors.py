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
    """Decision thresholds. The comments quote the calibration runs, the table in
    docs/troubleshooting.md ("Calibration"): the tiny preset (4 × 128) and the tests' small
    model (2 × 48), char tokenizer, built-in Shakespeare; benchmarks/calibrate_doctor.py
    prints these statistics for any model and set of learning rates."""

    # initial loss: a healthy init predicts ~uniformly, loss ≈ ln(vocab). Healthy runs
    # start +0.01 to +0.06 nats above ln(V); weights ×30 (a test) start several nats above.
    initial_tol: float = 0.5  # nats away from ln(V)
    # loss not decreasing: judged on windows of W steps after warm-up
    window_min: int = 10
    window_max: int = 50
    stuck_drop: float = 0.1  # less than this many nats below the first loss after ≥ 2 windows: nothing learned
    rise_margin: float = 0.1  # window mean this far above the best window mean: the loss is climbing
    # unigram level: the entropy of the token frequencies, the loss of a model that ignores
    # context (char Shakespeare: 3.32 nats). At lr 0.1 the loss reaches it within two windows
    # and hovers there; at lr 2e-3 (healthy) and 0.05 it passes it and goes on down.
    unigram_margin: float = 0.1
    unigram_windows: int = 3  # windows after warm-up before being stuck there counts
    # update-to-weight ratio ‖ΔW‖/‖W‖ per step (median of the last 20, one every 10 steps):
    # lr 2e-3 medians 1e-2 (range 2e-3–4.5e-2); lr 3e-4 2.6e-3; lr 3e-5 5e-4–6e-4; lr 1e-7 2e-6;
    # lr 1.0 6e-2 (range 1.5e-2–1.1e-1)
    ratio_low: float = 1e-4  # a flat loss with updates this small has stalled (fires on its own)
    ratio_small: float = 1e-3  # a loss that does not decrease with updates below this: lr too low
    ratio_high: float = 0.1
    # a loss that does not decrease with a peak lr below this: "too low" (the only sign when no
    # ratio is recorded). 3× under AdamW's usual 3e-4, 6–20× under the presets' 6e-4–2e-3
    lr_low: float = 1e-4
    # "too high" evidence for a loss that does not decrease: the grad-norm window median this
    # many times its lowest (measured 1.0–1.7× at every lr from 1e-7 to 1.0, so a margin for
    # other models). The clip rate is reported but decides nothing: after warm-up lr 1.0 clips
    # 61–99% of steps, but so do lr 1e-7 and 3e-5 (100%: a model that learns nothing keeps its
    # large initial gradients) and lr 3e-4 (89%), while lr 0.05–0.1 clip 1–4%.
    gn_growth: float = 3.0
    # exploding gradients: grad-norm median of the last window vs the lowest window median so far
    # (healthy: the median falls), or the loss's window mean far above the first loss (lr 1.0
    # with clipping: caught by this rule at step 15, tiny and small model alike)
    explode_factor: float = 10.0
    blowup_nats: float = 1.0  # window mean this far above the first loss: diverged
    # repetition: fraction of repeated 4-grams in a sample minus the same in real validation text.
    # Samples at temperature 0.8 repeat 0–10% (real text 2%); greedy samples of a narrow model 99%.
    rep_n: int = 4
    rep_excess: float = 0.25
    rep_persist: int = 2  # consecutive evaluations
    narrow_embd: int = 384  # the troubleshooting table's "128 → 384"
    low_temperature: float = 0.5  # sampling this cold (0 = greedy) is the first suspect for loops
    # too slow: projected wall-clock for the planned budget
    slow_hours: float = 24.0
    slow_after_steps: int = 10  # the first steps include warm-up work (allocation, compile)
    mfu_low: float = 0.05  # on a GPU, < 5% of peak FLOPs means the GPU mostly waits
    # overfitting: validation loss above its best while training loss keeps falling
    # (3 KB training set: val 2.625 → 3.20 while train 2.24 → 1.92)
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
    temperature: float | None = None  # the sampling temperature of the repetition probe
    from_weights: bool = False  # started from trained weights (fine-tuning, --init-from), not a fresh init

    @classmethod
    def from_config(cls, cfg: dict, **extra) -> "RunInfo":
        m, t = cfg["model"], cfg["train"]
        return cls(
            vocab_size=m["vocab_size"],
            n_embd=m["n_embd"],
            max_steps=t["max_steps"],
            max_time=t["max_time"],
            tokens_per_step=t["batch_size"] * m["block_size"],
            warmup_steps=t["warmup_steps"],
            grad_clip=t["grad_clip"],
            lr=t["lr"],
            compile=t["compile"],
            temperature=cfg.get("sample", {}).get("temperature"),
            device=extra.pop("device", t["device"]),
            dtype=extra.pop("dtype", t["dtype"]),
            **extra,
        )


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
        return (
            f"doctor: {self.symptom} (step {self.step})\n"
            f"  evidence: {self.evidence}\n"
            f"  likely cause: {self.cause}\n"
            f"  fix: {self.fix}"
        )

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
        if self.run.from_weights:  # a trained model is meant to beat chance at step 1
            self.summary = "the run starts from trained weights (fine-tuning or --init-from): no ln(vocab) to expect"
            return None
        if self.measured or rec["step"] != 1:
            if not self.measured and rec["step"] > 1:
                self.summary = "the run's first step is not in the record (resumed run)"
            return None
        self.measured = True
        loss, expect = rec["loss"], math.log(self.run.vocab_size)
        gap = loss - expect if _finite(loss) else float("inf")
        self.summary = (
            f"step-1 loss {loss:.3f} vs ln({self.run.vocab_size}) = {expect:.3f} (gap {gap:+.3f}, "
            f"tolerance ±{self.th.initial_tol:g})"
        )
        if abs(gap) <= self.th.initial_tol:
            return None
        if gap > 0:
            cause = "the initial logits are too large: weights initialised with too big a scale (GPT-2 uses std 0.02)"
            fix = (
                "check the weight initialisation (std 0.02; residual projections scaled by 1/sqrt(2·n_layer)) "
                "and that the LM head is not scaled up"
            )
        else:
            cause = (
                "the model predicts better than chance before training: the targets leak into the inputs "
                "(labels not shifted by one, or a non-causal mask)"
            )
            fix = "check that targets are the inputs shifted by one token and that attention is causal"
        return Finding(
            self.key, self.symptom, 1, self.summary, cause, fix, {"loss": loss, "ln_vocab": expect, "gap": gap}
        )


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
        clip_rate = sum(bool(r.get("clipped")) for r in steps[-board.window :]) / min(len(steps), board.window)
        skipped = sum(bool(r.get("skipped")) for r in steps)
        if not (_finite(loss) and _finite(gn)):
            self.nonfinite += 1
            what = "loss" if not _finite(loss) else "gradient norm"
            ev = (
                f"non-finite {what} at step {step} (loss {loss}, grad norm {gn}); {skipped} step(s) skipped by "
                "the spike guard so far; "
                f"lr {rec['lr']:.2e}"
            )
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
            self.summary = (
                f"grad norm median {med:.3g} over the last {W} steps"
                + (f" ({growth:.1f}× its lowest window median {self.min_gn_median:.3g})" if judged else "")
                + f"; clip rate {clip_rate:.0%}; {skipped} skipped step(s); no NaN/Inf"
            )
            nums = {
                "grad_norm_median": med,
                "growth": growth,
                "clip_rate": clip_rate,
                "lr": rec["lr"],
                "skipped": skipped,
            }
            if growth >= self.th.explode_factor:
                return self._fire(
                    step,
                    f"gradient norm grew {growth:.0f}× (window median {self.min_gn_median:.3g} → {med:.3g}); "
                    f"clip rate {clip_rate:.0%}; lr {rec['lr']:.2e}",
                    nums,
                )
            if first is not None and mean_loss > first + self.th.blowup_nats:
                nums["loss_mean"] = mean_loss
                return self._fire(
                    step,
                    f"loss diverged: mean {mean_loss:.3f} over the last {W} steps vs {first:.3f} at step 1; "
                    f"grad norm median {med:.3g}, clip rate {clip_rate:.0%}; lr {rec['lr']:.2e}",
                    nums,
                )
        if len(steps) >= W:
            window = [r["grad_norm"] for r in steps[-W:] if _finite(r["grad_norm"])]
            if window:
                self.min_gn_median = min(self.min_gn_median, statistics.median(window))
        if self.summary == "no data":
            self.summary = f"no NaN/Inf so far; grad norm {gn:.3g}"
        return None

    def _fire(self, step, evidence, nums):
        clip = f"clipping is at {self.run.grad_clip:g}" if self.run.grad_clip else "gradient clipping is off"
        return Finding(
            self.key,
            self.symptom,
            step,
            evidence,
            f"exploding gradients: the learning rate ({self.run.lr:g} peak) is too high for this model, or the "
            f"warm-up is too short; {clip}",
            "lower the learning rate 3–10× (e.g. --train.lr 3e-4; `scratchlm sweep lr` finds the range), "
            "keep --train.grad_clip 1.0, lengthen --train.warmup_steps; with fp16 use bf16 instead "
            "(--train.dtype bf16)",
            nums,
        )


class NotDecreasing(Detector):
    """No meaningful drop in the loss. The verdict rests on evidence (`_evidence`), never
    on the absence of it: "too high" when the loss climbs, or falls to the unigram level
    at once and hovers there, or the gradient norms grow, or the updates are large (the clip
    rate points both ways, see Thresholds.gn_growth); "too low" when the updates are small
    (update-to-weight ratio) or the learning rate is far below the usual ones (all there is
    to go on without the live doctor's ratios). With neither (or both), it says it cannot tell."""

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
        before = [r["loss"] for r in steps[-2 * W : -W] if _finite(r["loss"])]
        if len(now) < 2 or len(before) < 2:
            return None
        m_now, m_before = statistics.fmean(now), statistics.fmean(before)
        # the drop between windows, against the noise of the two means
        se = math.sqrt(statistics.variance(now) / len(now) + statistics.variance(before) / len(before))
        first = board.first_loss() if board.first_loss() is not None else steps[0]["loss"]
        ratio = board.recent_ratio()
        gn = statistics.median(r["grad_norm"] for r in steps[-W:])
        clip_rate = sum(bool(r.get("clipped")) for r in steps[-W:]) / W
        self.summary = (
            f"loss {first:.3f} at the start → {m_now:.3f} (mean of the last {W} steps; previous window "
            f"{m_before:.3f} ± {se:.3f})" + (f"; update/weight ratio {ratio:.1e}" if ratio is not None else "")
        )
        nums = {
            "first_loss": first,
            "window_mean": m_now,
            "previous_window_mean": m_before,
            "noise": se,
            "update_ratio": ratio,
            "grad_norm_median": gn,
            "clip_rate": clip_rate,
            "lr": rec["lr"],
        }
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
            older = [r["loss"] for r in steps[-3 * W : -2 * W] if _finite(r["loss"])]
            at_unigram = len(older) >= 2 and statistics.fmean(older) - m_now < 2 * se
        if uni is not None:
            self.summary += f"; unigram level {uni:.3f}"
        if not (stuck or at_unigram or (flat and ratio is not None and ratio < self.th.ratio_low) or self.rising >= 2):
            return None
        peak_lr = max(r["lr"] for r in steps)  # the rate reached so far (warm-up ramps up to it)
        high, low = self._evidence(past_warmup, W, ratio, at_unigram, uni, peak_lr)
        ev = (
            self.summary
            + f"; grad norm median {gn:.3g}, clip rate {clip_rate:.0%}, lr {rec['lr']:.2e}"
            + "".join(f"; {e}" for e in high + low)
        )
        sweep = "`scratchlm sweep lr` finds the range"
        if low and not high:
            return Finding(
                self.key,
                self.symptom + " — learning rate too low",
                rec["step"],
                ev,
                "the learning rate is too low: each step changes the weights too little to move the loss",
                f"raise the learning rate (3e-4 is a good start for AdamW; the presets use 6e-4 to 2e-3); {sweep}",
                nums | {"verdict": "too low"},
            )
        if high and not low:
            return Finding(
                self.key,
                self.symptom + " — learning rate too high",
                rec["step"],
                ev,
                "the learning rate is too high: updates overshoot, so the loss climbs or hovers instead of falling",
                f"lower the learning rate 3–10× (3e-4 is a good start for AdamW); {sweep}",
                nums | {"verdict": "too high"},
            )
        # no evidence either way (or evidence both ways): say so rather than guess
        return Finding(
            self.key,
            self.symptom + " — learning rate too high or too low (the evidence does not tell which)",
            rec["step"],
            ev,
            "the learning rate may be too high or too low, or the model sits on a plateau it has yet to "
            "leave; these metrics do not show which"
            + ("" if ratio is not None else " (no update/weight ratios recorded: trained without the live doctor)"),
            "run `scratchlm sweep lr` with this run's settings: it tries rates on both sides and shows which is better",
            nums | {"verdict": "cannot tell"},
        )

    def _evidence(self, past_warmup, W, ratio, at_unigram, uni, peak_lr):
        """The signs of a learning rate too high and too low, each a line of evidence."""
        th, high, low = self.th, [], []
        # grad-norm growth: the last window's median against the lowest window median after warm-up
        meds = [
            statistics.median(gs)
            for i in range(0, len(past_warmup) - W + 1, W)
            if (gs := [r["grad_norm"] for r in past_warmup[i : i + W] if _finite(r["grad_norm"])])
        ]
        growth = meds[-1] / min(meds) if meds and min(meds) > 0 else 1.0
        if self.rising >= 2:
            high.append(
                f"the loss climbed above its best window mean ({self.best_mean:.3f}) {self.rising} windows in a row"
            )
        if ratio is not None and ratio > th.ratio_high:
            high.append(f"update/weight ratio {ratio:.1e} > {th.ratio_high:g}: steps overshoot")
        if growth >= th.gn_growth:
            high.append(f"grad norm grew {growth:.1f}× from its lowest window median")
        if at_unigram:  # fast to the unigram level, then stuck: the steps are too big to settle into finer structure
            early = [
                statistics.fmean(ls)
                for i in (0, W)
                if (ls := [r["loss"] for r in past_warmup[i : i + W] if _finite(r["loss"])])
            ]
            if min(early, default=math.inf) < uni + th.unigram_margin:
                high.append(
                    f"the loss reached the unigram level ({uni:.2f} nats) within two windows after warm-up, "
                    "then hovered there"
                )
        if ratio is not None and ratio < th.ratio_small:
            low.append(
                f"update/weight ratio {ratio:.1e} < {th.ratio_small:g} (healthy runs: 2e-3 to 2e-2): steps are "
                "too small"
            )
        if peak_lr < th.lr_low:
            low.append(
                f"peak lr {peak_lr:.1e} < {th.lr_low:g} (AdamW usually starts at 3e-4; the presets use 6e-4 to 2e-3)"
            )
        return high, low


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
        self.summary = (
            f"sample at step {rec['step']}: {rec['rep']:.0%} of {self.th.rep_n}-grams repeated, distinct-2 "
            f"{rec['distinct']:.2f} (real text: {rec['ref_rep']:.0%}, {rec['ref_distinct']:.2f}); "
            f"{len(self.history)} evaluation(s)"
        )
        last = self.history[-self.th.rep_persist :]
        if len(last) < self.th.rep_persist or any(r["rep"] - r["ref_rep"] < self.th.rep_excess for r in last):
            return None
        reps = ", ".join(f"{r['rep']:.0%} at step {r['step']}" for r in last)
        T, n_embd = self.run.temperature, self.run.n_embd
        narrow = n_embd and n_embd < self.th.narrow_embd
        widen = f"widen the model (e.g. --model.n_embd {max(2 * n_embd, self.th.narrow_embd)})"
        if self.run.from_weights:  # a fine-tuned model answering plain text in its answers' shape, not a small one
            cause = ("the run started from trained weights and has drifted away from plain text: the probe samples "
                     "plain text, and the new training (fine-tuning) taught another habit (catastrophic forgetting)")
            fix = ("if plain text still matters: a lower --train.lr, fewer steps, or plain text mixed into the data; "
                   "a chat model is better judged with `scratchlm eval` and `scratchlm chat`")
        elif T is not None and T < self.th.low_temperature:  # cold sampling loops first: check it before the width
            cause = (
                f"sampling is {'greedy' if T == 0 else 'nearly greedy'} (temperature {T:g}): the likeliest "
                "token wins every "
                "time, so a model that is not yet good enough falls into a loop"
                + (f"; the narrow model (n_embd = {n_embd}) makes that likelier" if narrow else "")
            )
            fix = "sample with temperature 0.8–1.0 and top-p 0.95 (--sample.temperature 0.8), and train longer" + (
                f"; {widen}" if narrow else ""
            )
        elif narrow:
            cause = (
                f"the model is narrow (n_embd = {n_embd}): too little capacity to track context, so it falls into loops"
            )
            fix = f"{widen}, train longer, and sample with temperature 0.8–1.0 and top-p 0.95"
        else:
            cause = "the model has not learned enough context to avoid loops (undertrained)"
            fix = "train longer, or sample with a higher temperature (0.8–1.0) and top-p 0.95"
        text = rec.get("text", "")[:80].replace("\n", "⏎")
        ev = (
            f"{self.th.rep_n}-gram repetition {reps} vs {rec['ref_rep']:.0%} in real text (excess ≥ "
            f"{self.th.rep_excess:.0%} "
            f"at {self.th.rep_persist} evaluations in a row); distinct-2 {rec['distinct']:.2f}"
            + (f"; sampled at temperature {T:g}" if T is not None else "")
            + f"; sample: {text!r}"
        )
        return Finding(
            self.key,
            self.symptom,
            rec["step"],
            ev,
            cause,
            fix,
            {
                "rep": rec["rep"],
                "ref_rep": rec["ref_rep"],
                "distinct": rec["distinct"],
                "excess": excess,
                "n_embd": n_embd,
                "temperature": T,
            },
        )

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
        self.summary = (
            f"{tok_s:,.0f} tokens/s ({step_s:.3g} s/step); planned budget ≈ {total_h:.2g} h, ETA {eta / 3600:.2g} h"
            + (f"; MFU {mfu:.1%}" if _finite(mfu) else "")
        )
        slow = total_h > self.th.slow_hours
        gpu_idle = _finite(mfu) and self.run.device.startswith("cuda") and mfu < self.th.mfu_low and step >= 50
        if not (slow or gpu_idle):
            return None
        why = (
            f"the planned budget takes {total_h:.1f} h (> {self.th.slow_hours:g} h)"
            if slow
            else f"the GPU does useful work {mfu:.1%} of the time (< {self.th.mfu_low:.0%})"
        )
        return Finding(
            self.key,
            self.symptom,
            step,
            self.summary + "; " + why,
            f"too much work for this hardware at this speed ({self.run.device}, {self.run.dtype}, "
            f"{self.run.world} device(s))",
            "; ".join(speed_hints(self.run)) + "; or plan a smaller budget (--train.max_time SECONDS)",
            {"tokens_per_s": tok_s, "eta_s": eta, "total_hours": total_h, "mfu": mfu},
        )


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
        recent = [r["loss"] for r in board.steps[-board.window :] if _finite(r["loss"])]
        train = statistics.fmean(recent) if recent else None
        self.evals.append((rec, train))
        best_rec, best_train = min(self.evals, key=lambda e: e[0]["val_loss"])
        if len(self.evals) < 2:
            self.summary = f"one evaluation (val loss {rec['val_loss']:.3f}); needs {1 + self.th.overfit_persist}"
            return None
        self.measured = True
        best = best_rec["val_loss"]
        self.summary = (
            f"val loss {rec['val_loss']:.3f} at step {rec['step']}, best {best:.3f} at step {best_rec['step']}"
            + (f"; train loss {best_train:.3f} → {train:.3f}" if train is not None and best_train is not None else "")
            + f" ({len(self.evals)} evaluations)"
        )
        falling = train is not None and best_train is not None and train < best_train
        self.above = self.above + 1 if rec["val_loss"] > best + self.th.overfit_margin and falling else 0
        if self.above < self.th.overfit_persist:
            return None
        gap = rec["val_loss"] - train
        return Finding(
            self.key,
            self.symptom,
            rec["step"],
            self.summary + f"; val loss above its best for {self.above} evaluations; train/val gap {gap:.2f} nats",
            "the model memorises the training text: too little data for this model size or too many steps",
            "use more data, stop earlier (checkpoints/best/ holds the best model), add dropout (--model.dropout 0.1), "
            "or use a smaller model",
            {
                "val_loss": rec["val_loss"],
                "best_val_loss": best,
                "best_step": best_rec["step"],
                "train_loss": train,
                "train_loss_at_best": best_train,
            },
        )

    def on_end(self, board):
        if not self.measured and not self.evals:
            self.summary = "no evaluation in the record"
        return None


DETECTORS = (InitialLoss, NotDecreasing, Exploding, Repetition, TooSlow, Overfitting)


class Doctor:
    """Routes records to every detector and keeps the findings (each fires once)."""

    def __init__(self, run: RunInfo, th: Thresholds | None = None, on_finding=None):
        self.run, self.th = run, th or Thresholds()
        self.on_finding = on_finding
        self._reset()

    def _reset(self) -> None:
        self.board = Board(self.run, self.th)
        # the explosion detector runs first so "not decreasing" can defer to it
        order = (InitialLoss, Exploding, NotDecreasing, Repetition, TooSlow, Overfitting)
        self.detectors = [cls(self.run, self.th) for cls in order]
        self.findings: list[Finding] = []
        self.log: list[tuple[str, dict]] = []  # every record fed, in order: rewind() replays it

    def _collect(self, det: Detector, f: Finding | None) -> None:
        if f is None or det.finding is not None:
            return
        det.finding = f
        self.board.fired.add(det.key)
        self.findings.append(f)
        if self.on_finding:
            self.on_finding(f)

    def carry(self, f: Finding) -> None:
        """Mark a finding made earlier (before a resume) as found, without announcing it again."""
        det = self.by_key()[f.key]
        if det.finding is None:
            det.finding = f
            self.board.fired.add(f.key)
            self.findings.append(f)

    def rewind(self, step: int) -> None:
        """Training went back to the checkpoint at `step` (a guard rollback): forget what came
        after it, as the offline reader does (records.drop_rewound), by rebuilding the
        detectors from the records up to `step`. Findings made after it are dropped."""
        log, keep = [(k, r) for k, r in self.log if r["step"] <= step], [f for f in self.findings if f.step <= step]
        on_finding, self.on_finding = self.on_finding, None  # the replay finds those again, silently
        self._reset()
        for kind, rec in log:
            getattr(self, kind)(rec)
        self.on_finding = on_finding
        for f in keep:  # e.g. findings carried over from before a resume, which the replay cannot remake
            self.carry(f)

    def step(self, rec: dict) -> None:
        if self.board.steps and rec["step"] <= self.board.steps[-1]["step"]:
            self.rewind(rec["step"] - 1)
        self.log.append(("step", rec))
        self.board.steps.append(rec)
        for d in self.detectors:
            if d.finding is None:
                self._collect(d, d.on_step(rec, self.board))

    def eval(self, rec: dict) -> None:
        self.log.append(("eval", rec))
        for d in self.detectors:
            if d.finding is None:
                self._collect(d, d.on_eval(rec, self.board))

    def probe(self, rec: dict) -> None:
        self.log.append(("probe", rec))
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
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    pairs = [tuple(ids[i : i + 2]) for i in range(len(ids) - 1)]
    rep = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
    distinct2 = len(set(pairs)) / len(pairs) if pairs else 1.0
    return rep, distinct2
