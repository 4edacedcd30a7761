"""Attention during training: record snapshots (and TensorBoard scalars) from the loop's events.

    from scratchlm.viz.live import attach
    attach(events, cfg.viz)            # then run_training(cfg, out, events=events)

The loop never imports this module; `scratchlm train` attaches it. With `viz.snapshots`
on, the recorder takes a snapshot before the first step, at every `viz.every`-th
evaluation, and every `viz.every_steps` steps in between when that is set (the main
job: every 25 steps, so the film strip shows heads forming): the attention maps of a
fixed probe prompt and four numbers per head (snapshots.py, metrics.py). Each costs
two forward passes over a few dozen tokens with no gradients, next to a training step
over thousands of tokens, so it adds little (benchmarks/bench_snapshots.py measures
it). The probe uses no random numbers from the training RNG and switches dropout off
only for itself, so a run trains exactly the same with the recorder on or off.

When training goes back (a resume, or the guard's rollback), snapshots of the steps
that are about to be redone are deleted. At the end, with `viz.figures`, the figures
are drawn into RUN/figures/. With `viz.tensorboard` and the `tensorboard` package
installed, the losses, learning rate, gradient norm, throughput and head metrics also go
to RUN/tensorboard/ (`tensorboard --logdir RUN/tensorboard`). An error in here
switches the recorder off with a warning; it never stops a training run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..config import VizConfig
from ..train.events import Events, Watcher
from .capture import token_labels
from .metrics import METRICS, repeated_random_ids
from .snapshots import drop_after, measure, save_snapshot

INDUCTION_SEED = 1234  # fixed, so every snapshot (and every run) measures on the same sequence


def probe_ids(trainer, vc: VizConfig) -> list[int]:
    """The probe prompt's ids: viz.prompt, or the first viz.prompt_tokens of the validation text."""
    if vc.prompt:
        ids = trainer.tok.encode(vc.prompt)
    else:
        ids = [int(i) for i in trainer.val_batches.data[: vc.prompt_tokens]]
    ids = ids[: min(vc.prompt_tokens, trainer.cfg.model.block_size)]  # a longer prompt is cut
    if len(ids) < 2:
        raise ValueError(f"the probe prompt {vc.prompt!r} is {len(ids)} token(s); viz.prompt needs at least 2")
    return ids


def induction_ids(tok, vocab_size: int, block_size: int, n: int) -> list[int]:
    special = set((getattr(tok, "special_tokens", None) or {}).values())
    return repeated_random_ids(vocab_size, min(n, block_size // 2), INDUCTION_SEED, special)


class SnapshotRecorder(Watcher):
    """Subscribes to train_start / eval / rollback / train_end; writes RUN/attention/step_*.npz."""

    label, off_means = "viz", "attention snapshots are off for this run"

    def __init__(self, vc: VizConfig | None = None, say: Callable[[str], None] | None = None):
        self.vc = vc or VizConfig()
        if say is not None:
            self.say = say
        self.n_evals = 0
        self.tb = None  # a SummaryWriter when TensorBoard is on
        self.written: list[Path] = []

    def handlers(self):
        return {"train_start": self._start, "step_end": self._step, "eval": self._eval, "rollback": self._rollback,
                "train_end": self._end}

    # ---- events ---------------------------------------------------------------
    def _start(self, info):
        t = info["trainer"]
        rt = getattr(t, "rt", None)
        # one recorder per run, on rank 0; FSDP shards the weights, so rank 0 alone cannot run the model
        if (rt is not None and not rt.master) or getattr(t, "fsdp", False):
            self.enabled = False
            return
        self.trainer, self.run_dir = t, Path(t.run_dir)
        self.model = t.raw_model
        cfg = t.cfg
        self.probe = probe_ids(t, self.vc)
        self.tokens = token_labels(t.tok, self.probe)
        self.induction = induction_ids(t.tok, cfg.model.vocab_size, cfg.model.block_size, self.vc.induction_tokens)
        step = int(info.get("step", t.step))
        drop_after(self.run_dir, step)  # a resume redoes the steps after `step`
        if self.vc.tensorboard:
            self.tb = _summary_writer(self.run_dir / "tensorboard", purge_step=step + 1 if step else None)
        if self.vc.snapshots and step == 0:
            self.record(0)

    def _step(self, info):
        s = info["step"]
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
                if info.get(key) is not None and np.isfinite(info[key]):
                    self.tb.add_scalar(f"train/{key}", info[key], s)
        n, evals = self.vc.every_steps, self.trainer.cfg.train.eval_interval
        if self.vc.snapshots and n and s % n == 0 and not (evals and s % evals == 0):  # an eval step records itself
            self.record(s)

    def _eval(self, info):
        if self.tb is not None:
            for key in ("val_loss", "val_bpb"):
                self.tb.add_scalar(f"val/{key[4:]}", info[key], info["step"])
        self.n_evals += 1
        if self.vc.snapshots and self.n_evals % self.vc.every == 0:
            drop_after(self.run_dir, info["step"])  # anything later belongs to steps a rollback undid
            self.record(info["step"], info.get("val_loss", float("nan")))

    def _rollback(self, info):
        drop_after(self.run_dir, int(info["to_step"]))

    def _end(self, info):
        if self.tb is not None:
            self.tb.close()
        if info.get("stopped_by") == "signal":  # the user asked to stop: no minute of drawing now
            if self.vc.figures and self.written:
                self.say(f"viz: no figures drawn (stopped); `scratchlm viz all {self.run_dir}` draws them")
            return
        if self.vc.figures and self.written:
            from .figures import render_all  # matplotlib: only needed here, at the very end

            run = _InMemoryRun(self.model, self.trainer.tok, self.trainer.cfg, self.run_dir)
            paths = render_all(run, self.run_dir / "figures")
            self.say(f"viz: {len(paths)} figures in {self.run_dir / 'figures'} (attention snapshots in "
                     f"{self.run_dir / 'attention'}; `scratchlm viz evolution {self.run_dir}` redraws them)")

    # ---- the measurement --------------------------------------------------------
    def record(self, step: int, val_loss: float = float("nan")) -> Path:
        measured = measure(self.model, self.probe, self.induction)
        path = save_snapshot(self.run_dir, step, measured, self.probe, self.tokens, self.induction, val_loss)
        self.written.append(path)
        if self.tb is not None:
            L, H = measured["entropy"].shape
            for name in METRICS:
                for layer in range(L):
                    for head in range(H):
                        tag = f"attention_{name}/layer{layer}_head{head}"
                        self.tb.add_scalar(tag, measured[name][layer, head], step)
        return path


class _InMemoryRun:
    """What figures need from a run (like inference.Run), from the trainer's own objects."""

    def __init__(self, model, tokenizer, config, run_dir):
        self.model, self.tokenizer, self.config, self.run_dir = model, tokenizer, config, Path(run_dir)
        self.checkpoint = None


def _summary_writer(log_dir: Path, purge_step: int | None):
    """A TensorBoard SummaryWriter, or None when tensorboard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional extra: imports tensorboard
    except ImportError:
        return None
    # purge_step: on a resume, TensorBoard hides the events it had recorded after the resumed step
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def attach(events: Events | None = None, vc: VizConfig | None = None,
           say: Callable[[str], None] | None = None) -> Events:
    """Subscribe a SnapshotRecorder to `events` (a new Events if None) and return the events.
    Attaches nothing when both snapshots and TensorBoard are off: off costs nothing."""
    events = events if events is not None else Events()
    vc = vc or VizConfig()
    if vc.snapshots or vc.tensorboard:
        SnapshotRecorder(vc, say).attach(events)
    return events
