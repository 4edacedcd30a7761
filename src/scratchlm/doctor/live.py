"""The doctor during training: subscribe the detectors to the loop's events.

    from scratchlm.doctor.live import attach
    events = attach(Events())            # then run_training(cfg, out, events=events)

The loop never imports this module: `scratchlm train` (or your own code, as above)
attaches it. Besides routing the step/eval records to the detectors, the live doctor
takes two measurements the loop does not log, and appends them to probes.jsonl:
  - every `probe_every` steps, the update-to-weight ratio ‖W_after − W_before‖ / ‖W_before‖
    of one optimizer step (over the weight matrices), from a copy of the weights;
  - at each evaluation, a short sample and how much it repeats itself, next to the same
    measure on real validation text.
Findings are printed (unless quiet) and appended to diagnostics.jsonl. When training goes
back to a checkpoint (a guard rollback or a resume), a {"kind": "rewind"/"start", "step": S}
line in both files tells `scratchlm doctor` to drop what was recorded after step S, and the
live detectors forget it too (Doctor.rewind). An error inside the doctor switches it off
with a warning; it never stops a training run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..inference.generate import generate_tokens
from ..train.events import Events, Watcher
from .detectors import Doctor, Finding, RunInfo, Thresholds, repetition_stats
from .records import read_records, replay


@torch.no_grad()
def sample_ids(model, prompt_ids: list[int], n: int, temperature: float, top_p: float, seed: int) -> list[int]:
    """n new token ids from a seeded private generator: the training RNG is left alone,
    so a run with the doctor on trains exactly as one with it off."""
    was_training = model.training
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([prompt_ids], device=device)
    out = [int(t[0]) for t in generate_tokens(model, idx, n, temperature, 0, top_p, gen)]
    model.train(was_training)
    return out


class LiveDoctor(Watcher):
    """The detectors fed from the loop's events, plus the two probes the loop does not log."""

    label, off_means = "doctor", "live diagnostics are off for this run"

    def __init__(
        self, quiet: bool = False, thresholds: Thresholds | None = None, probe_every: int = 10, sample_tokens: int = 200
    ):
        self.quiet, self.th = quiet, thresholds or Thresholds()
        self.probe_every, self.sample_tokens = probe_every, sample_tokens
        self.doctor: Doctor | None = None
        self.enabled = True
        self._snapshot = None  # (step, [weight copies]) for the update ratio

    def handlers(self):
        return {"train_start": self._start, "step_end": self._step, "eval": self._eval, "train_end": self._end}

    # ---- files ----------------------------------------------------------------
    def _append(self, name: str, rec: dict) -> None:
        with open(self.run_dir / name, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _probe(self, rec: dict) -> None:
        self._append("probes.jsonl", rec)
        self.doctor.probe(rec)

    def _finding(self, f: Finding) -> None:
        self._append("diagnostics.jsonl", f.to_json())
        if not self.quiet:
            self.say(
                f.message()
                + f"\n  (saved in {self.run_dir / 'diagnostics.jsonl'}; `scratchlm doctor {self.run_dir}` shows "
                "the full table)"
            )

    # ---- events ---------------------------------------------------------------
    def _start(self, info):
        t = info["trainer"]
        if not t.rt.master:  # one doctor per run, on rank 0
            self.enabled = False
            return
        self.trainer, self.run_dir = t, Path(t.run_dir)
        cfg = to_dict(t.cfg)
        run = RunInfo.from_config(
            cfg,
            device=str(t.rt.device),
            dtype=t.rt.dtype,
            world=t.rt.world,
            n_params=t.raw_model.num_params(),
            unigram_loss=unigram_entropy(t.train_batches.data),
            from_weights=t.from_weights,
        )
        self.doctor = Doctor(run, self.th)
        if t.step > 0:  # resumed: rebuild the detectors' history silently, keep earlier findings
            past = read_records(self.run_dir)
            replay(self.doctor, past["steps"], past["evals"], past["probes"], upto=t.step)
            for f in past["findings"]:
                if f["step"] <= t.step:  # later ones belong to steps that are about to be redone
                    d = self.doctor.by_key()[f["key"]]
                    self.doctor.carry(Finding(d.key, d.symptom, 0, "(found before the resume)", "", ""))
            self._append("diagnostics.jsonl", {"kind": "start", "step": t.step})
        self.doctor.on_finding = self._finding
        # the repetition reference: the same measure on real validation text of the same length
        val = t.val_batches.data
        self.ref_ids = [int(i) for i in val[: self.sample_tokens]]
        self.prompt_ids = t.tok.encode(t.cfg.sample.prompt) or self.ref_ids[:1]
        self._append(
            "probes.jsonl",
            {
                "kind": "start",
                "step": t.step,
                "device": run.device,
                "dtype": run.dtype,
                "world": run.world,
                "n_params": run.n_params,
                "tokens_per_step": run.tokens_per_step,
                "unigram_loss": run.unigram_loss,
                "from_weights": run.from_weights,
            },
        )

    def _matrices(self):
        # the matrices being trained: frozen ones (train.freeze) would add to ‖W‖ and never to ‖ΔW‖
        return [p.detach() for p in self.trainer.raw_model.parameters() if p.dim() >= 2 and p.requires_grad]

    def _step(self, info):
        rec = dict(info)
        steps = self.doctor.board.steps
        if steps and rec["step"] <= steps[-1]["step"]:  # a guard rollback: mark it for `scratchlm doctor`
            for name in ("probes.jsonl", "diagnostics.jsonl"):
                self._append(name, {"kind": "rewind", "step": rec["step"] - 1})
        self.doctor.step(rec)  # drops the rewound steps itself
        step = rec["step"]
        snap, self._snapshot = self._snapshot, None
        if snap is not None and snap[0] == step - 1 and not rec.get("skipped"):
            after = self._matrices()
            num = sum(float((a.float() - b).pow(2).sum()) for a, b in zip(after, snap[1]))
            den = sum(float(b.pow(2).sum()) for b in snap[1])
            self._probe(
                {
                    "kind": "update_ratio",
                    "step": step,
                    "update_ratio": math.sqrt(num / den) if den > 0 else float("nan"),
                }
            )
        if step % self.probe_every == 0:
            self._snapshot = (step, [p.float().clone() for p in self._matrices()])

    def _eval(self, info):
        rec = dict(info)
        self.doctor.eval(rec)
        t, n = self.trainer, self.th.rep_n
        # FSDP shards the weights across ranks: rank 0 alone cannot run the model, so the
        # repetition probe is not measured there (the doctor reports it as not measurable).
        if self.sample_tokens <= 0 or getattr(t, "fsdp", False):
            return
        ids = sample_ids(
            t.raw_model,
            self.prompt_ids,
            self.sample_tokens,
            t.cfg.sample.temperature,
            t.cfg.sample.top_p,
            t.cfg.sample.seed,
        )
        self._probe(repetition_probe(rec["step"], ids, self.ref_ids, n, t.tok.decode(ids)))

    def _end(self, info):
        self.doctor.end()
        if self.quiet:
            return
        n = len([f for f in self.doctor.findings if f.step > 0])
        self.say(
            f"doctor: {n} problem(s) found; see {self.run_dir / 'diagnostics.jsonl'}"
            if n
            else "doctor: no problems seen (scratchlm doctor RUN_DIR shows what was checked)"
        )


def unigram_entropy(tokens, limit: int = 10_000_000) -> float:
    """Entropy (nats) of the token frequencies in (the first `limit` of) the training data:
    the loss of the best model that ignores context."""
    counts = np.bincount(np.asarray(tokens[:limit], dtype=np.int64)).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def repetition_probe(step: int, ids: list[int], ref_ids: list[int], n: int, text: str = "") -> dict:
    rep, distinct = repetition_stats(ids, n)
    ref_rep, ref_distinct = repetition_stats(ref_ids[: len(ids)], n)
    return {
        "kind": "repetition",
        "step": step,
        "n": n,
        "rep": rep,
        "distinct": distinct,
        "ref_rep": ref_rep,
        "ref_distinct": ref_distinct,
        "text": text[:200],
    }


def attach(events: Events | None = None, quiet: bool = False, **kwargs) -> Events:
    """Subscribe a LiveDoctor to `events` (a new Events if None) and return it."""
    events = events if events is not None else Events()
    LiveDoctor(quiet=quiet, **kwargs).attach(events)
    return events
