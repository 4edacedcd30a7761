"""The NaN and loss-spike guard: skip bad steps, and roll back when they keep coming.

Every optimizer step, before the update is applied, the guard looks at two numbers
the loop has computed anyway (the loss and the gradient norm):

    NaN or Inf in either           -> a bad step
    loss > mean + k·std of the     -> a bad step (a "spike"); the window holds the losses
      last `window` good steps        of recent good steps only, so a spike cannot raise
                                      the bar for the next one
    log gradient norm > mean +     -> a bad step too: the same test on the logs of the
      k·std of its own window         gradient norms of good steps (same k). Norms are
                                      multiplicative and heavy-tailed (a healthy run's norm
                                      can double within a few steps), so the test runs in
                                      log space with a floor of 0.25 on the std: the bar is
                                      at least e^(k/4) ≈ 4.5× the recent (geometric) mean

A bad step is skipped: the gradients are thrown away, the optimizer does not move,
the weights and Adam's moments stay as they were. One bad batch is then harmless.

`max_bad` bad steps in a row mean something worse (the weights themselves may be
drifting, or a stretch of the data is garbage). Then the trainer rolls back
(`Trainer.roll_back`): it reloads the newest *healthy* checkpoint (weights, optimizer,
RNG), moves the data position past the batches that went wrong, optionally multiplies
the learning rate by `lr_factor`, and carries on. The guard only detects; it keeps the
counts the trainer needs:

    streak      bad steps in a row; while it is above 0 nothing is evaluated or saved,
                so every checkpoint was written by a healthy run ("healthy" in its state)
    rollbacks   rollbacks in the current bad stretch. It goes back to 0 only after a
                full window of healthy steps in a row; after MAX_ROLLBACKS_PER_STRETCH
                the run gives up with a clear message. (Counting per checkpoint instead
                let a run with frequent checkpoints roll back forever: each rollback found
                a newer checkpoint to go to.)

The check costs a few float comparisons and two means/stds over ~50 numbers per step:
benchmarks/bench_guard.py measures it against the step itself.
"""

from __future__ import annotations

import math
from collections import deque

# After this many rollbacks without a full window of healthy steps in between, training
# gives up with a clear message instead of looping forever.
MAX_ROLLBACKS_PER_STRETCH = 3


class SpikeGuard:
    """Flags a step whose loss or gradient norm is non-finite, or more than `k` standard
    deviations above its recent window (a spike)."""

    def __init__(self, window: int = 50, k: float = 6.0, min_history: int | None = None):
        self.losses: deque[float] = deque(maxlen=window)
        self.norms: deque[float] = deque(maxlen=window)
        self.k = k
        # A mean and std over a handful of values are too noisy to call anything a spike.
        self.min_history = min_history if min_history is not None else min(20, window)

    def _spike(self, x: float, window, std_floor: float = 1e-3) -> tuple[float, float, float] | None:
        """(mean, std, bar) of the window when x is above the bar, mean + k·std, else None."""
        window = list(window)
        n = len(window)
        if n < self.min_history:
            return None
        mean = sum(window) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in window) / n)
        # the floor on std stops a perfectly flat window from flagging tiny wiggles
        bar = mean + self.k * max(std, std_floor)
        return (mean, std, bar) if x > bar else None

    def check(self, loss: float, grad_norm: float) -> str | None:
        """The reason the step is bad, or None (then loss and norm join their windows)."""
        if not math.isfinite(loss):
            return "non-finite loss"
        if not math.isfinite(grad_norm):
            return "non-finite gradient norm"
        if s := self._spike(loss, self.losses):
            return f"loss spike ({loss:.3f} > mean {s[0]:.3f} + {self.k:g}·std {s[1]:.3f})"
        log_norms = (math.log(max(v, 1e-12)) for v in self.norms)
        if s := self._spike(math.log(max(grad_norm, 1e-12)), log_norms, std_floor=0.25):
            return (f"gradient norm spike ({grad_norm:.3g} > {math.exp(s[2]):.3g}, "
                    f"the bar {self.k:g} std above the recent mean in log space)")
        self.losses.append(loss)
        self.norms.append(grad_norm)
        return None


class Guard:
    """The guard's state in a run: the spike detector, the current streak of bad steps,
    the learning-rate scale and the rollbacks of the current bad stretch."""

    def __init__(self, tc):
        self.enabled = tc.guard
        self.spikes = SpikeGuard(tc.guard_window, tc.guard_k)
        self.max_bad = tc.guard_max_bad
        self.lr_factor = tc.guard_lr_factor
        self.recovered_after = tc.guard_window  # healthy steps in a row that end a bad stretch
        self.max_rollbacks = MAX_ROLLBACKS_PER_STRETCH
        self.streak = 0  # bad steps in a row
        self.healthy_steps = 0  # good steps in a row
        self.lr_scale = 1.0  # product of lr_factor over the rollbacks so far
        self.rollbacks = 0  # rollbacks in the current bad stretch

    def check(self, loss: float, grad_norm: float) -> str | None:
        if not self.enabled:
            return None
        reason = self.spikes.check(loss, grad_norm)
        self.streak = self.streak + 1 if reason else 0
        self.healthy_steps = 0 if reason else self.healthy_steps + 1
        if self.healthy_steps >= self.recovered_after:
            self.rollbacks = 0  # the run has recovered: a later stretch starts its own count
        return reason

    @property
    def must_roll_back(self) -> bool:
        return self.enabled and self.streak >= self.max_bad

    def state_dict(self) -> dict:
        """What a checkpoint keeps, so a resumed run judges spikes exactly as before;
        `healthy`: written outside a bad streak, so a rollback may go back to it."""
        return {"losses": list(self.spikes.losses), "norms": list(self.spikes.norms), "lr_scale": self.lr_scale,
                "healthy": self.streak == 0}

    def load_state_dict(self, d: dict) -> None:
        self.spikes.losses.clear()
        self.spikes.losses.extend(d.get("losses", []))
        self.spikes.norms.clear()
        self.spikes.norms.extend(d.get("norms", []))
        self.lr_scale = d.get("lr_scale", 1.0)
        self.streak = self.healthy_steps = 0
