"""Events the training loop emits, so other tools can watch without the core knowing them.

    events = Events()
    events.on("step_end", lambda info: ...)    # info: a dict of this step's metrics

The loop prints nothing: the progress bar (`scratchlm.cli.progress`), the live doctor,
figures and reports all subscribe here, and the core imports none of them. What each
event's `info` holds (every event is emitted on rank 0 and on the other ranks alike):

    train_start     trainer (the Trainer: config, model, data), step (0, or where a resume
                    starts), max_steps, max_time, tokens_per_step, peak_flops (FLOP/s, the
                    MFU denominator) and peak_source (where that figure comes from)
    step_end        step, loss, lr, grad_norm, clipped, skipped (None or why the update was
                    skipped), overflow (fp16 loss scaling), tokens_per_s, mfu, eta_s (seconds
                    left, from this session's mean step time), time (training seconds so far)
    eval            step, val_loss (nats/token), val_bpb (bits per byte), val_tokens,
                    best (True when this is the lowest validation loss so far)
    checkpoint      step, path, checkpoint (its name: step_NNNNNNN, best or final)
    rollback        the guard's rollback record: reason, from_step, to_step, checkpoint,
                    data_skip, lr_scale, streak (rollbacks in this bad stretch)
    warning         message (also written to metrics.jsonl as {"event": "warning", ...})
    stop_requested  step (a first Ctrl-C or SIGTERM: the run stops after this step)
    train_end       the summary `Trainer.fit` returns: step, stopped_by (steps | time | signal),
                    train_time, val_loss, val_bpb, best_val_loss, final_train_loss
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Callable

EVENT_NAMES = ("train_start", "step_end", "eval", "checkpoint", "rollback", "warning", "stop_requested", "train_end")


class Events:
    """A list of subscribers per event name; `emit` calls them in the order they subscribed."""

    def __init__(self):
        self._handlers: dict[str, list[Callable]] = defaultdict(list)

    def on(self, name: str, fn: Callable) -> Callable:
        if name not in EVENT_NAMES:
            raise ValueError(f"unknown event {name!r}; events: {', '.join(EVENT_NAMES)}")
        self._handlers[name].append(fn)
        return fn

    def emit(self, name: str, **info) -> None:
        for fn in self._handlers[name]:
            fn(info)


class Watcher:
    """Base of the extras that watch a run through its events (the live doctor, the attention
    recorder). A watcher must never end a training run: its first error switches it off, and
    `say` reports that in one line. Subclasses name their handlers and the warning's words."""

    label = "watcher"  # who speaks in the warning, e.g. "doctor"
    off_means = "it is off for this run"  # what the user loses when it switches off
    enabled = True

    def handlers(self) -> dict[str, Callable[[dict], None]]:
        raise NotImplementedError

    def say(self, text: str) -> None:
        from tqdm import tqdm  # deferred: only a watcher with something to say prints, above the bar

        tqdm.write(text)

    def attach(self, events: Events) -> Events:
        for name, fn in self.handlers().items():
            events.on(name, self._guarded(fn))
        return events

    def _guarded(self, fn: Callable[[dict], None]) -> Callable[[dict], None]:
        @functools.wraps(fn)
        def run(info: dict) -> None:
            if not self.enabled:
                return
            try:
                fn(info)
            except Exception as e:  # a watcher must never end a training run
                self.enabled = False
                self.say(f"{self.label}: internal error ({type(e).__name__}: {e}); {self.off_means}")

        return run
