"""What `scratchlm train` shows while training: a progress bar and lines, from the loop's events.

    progress = Progress(quiet=False)
    run_training(cfg, out, events=progress.attach(Events()), say=progress.say)

The bar carries loss, learning rate, tokens/s, MFU and the ETA the loop computes; lines
above it report evaluations, skipped steps, rollbacks and, once, a hint when the model
FLOPs utilisation is low. Warnings go to stderr even with `quiet` (they are in
metrics.jsonl too). Only rank 0 of a torchrun job shows anything.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..train.events import Events
from ..train.flops import mfu_hint

HINT_AFTER = 10  # steady-state steps (after the first) averaged before the MFU hint is judged


def fmt_secs(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """A tqdm bar and the messages printed above it, driven by a training run's events."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.master = True  # under torchrun only rank 0 shows anything
        self.bar = None
        self.start: dict = {}
        self._inverse_mfu: list[float] = []  # 1/MFU of steady steps: their mean gives the time-weighted MFU

    def attach(self, events: Events) -> Events:
        for name in ("train_start", "step_end", "eval", "rollback", "warning", "stop_requested", "train_end"):
            events.on(name, getattr(self, "_" + name))
        return events

    def say(self, line: str) -> None:
        """Print a line above the bar (nothing when quiet)."""
        if not self.quiet:
            tqdm.write(line)

    def _train_start(self, info: dict) -> None:
        trainer = info["trainer"]
        if not trainer.rt.master:
            self.quiet, self.master = True, False
        self.start = {**info, "log_interval": trainer.cfg.train.log_interval, "device_type": trainer.rt.device.type}
        self.bar = tqdm(total=info["max_steps"], initial=info["step"], disable=self.quiet, unit="step",
                        dynamic_ncols=True, mininterval=0.5)

    def _step_end(self, info: dict) -> None:
        step, max_time = info["step"], self.start["max_time"]
        if max_time and step > 5:  # the bar's total follows whichever budget binds
            total = min(self.start["max_steps"], int(step * max_time / max(info["time"], 1e-9)))
            if abs(total - self.bar.total) > 1:
                self.bar.total = total
        self.bar.update(step - self.bar.n)
        if step % self.start["log_interval"] == 0 or step == 1:
            self.bar.set_postfix_str(f"loss {info['loss']:.3f}  lr {info['lr']:.1e}  {info['tokens_per_s'] / 1e3:.1f}k "
                                     f"tok/s  MFU {info['mfu']:.0%}  ETA {fmt_secs(info['eta_s'])}", refresh=False)
        if step > self.start["step"] + 1 and len(self._inverse_mfu) < HINT_AFTER:  # the first step warms up
            self._inverse_mfu.append(1 / max(info["mfu"], 1e-12))
            if len(self._inverse_mfu) == HINT_AFTER:
                hint = mfu_hint(HINT_AFTER / sum(self._inverse_mfu), self.start["device_type"])
                if hint:
                    self.say(f"hint: {hint} (peak: {self.start['peak_source']}, "
                             f"{self.start['peak_flops'] / 1e12:.2f} TFLOP/s)")
        if info["skipped"]:
            self.say(f"step {step}: update skipped, {info['skipped']}")

    def _eval(self, info: dict) -> None:
        self.say(f"step {info['step']:>6}: val loss {info['val_loss']:.4f}, {info['val_bpb']:.3f} bits/byte"
                 + (" (best)" if info["best"] else ""))

    def _rollback(self, info: dict) -> None:
        self.bar.update(info["to_step"] - self.bar.n)
        self.say(f"rolled back from step {info['from_step']} to {info['checkpoint']} (step {info['to_step']}); data "
                 f"skips ahead to position {info['to_step'] + info['data_skip']}; lr × {info['lr_scale']:g}")

    def _warning(self, info: dict) -> None:
        if self.master:
            tqdm.write(f"warning: {info['message']}", file=sys.stderr)

    def _stop_requested(self, info: dict) -> None:
        if self.master:
            tqdm.write("\nstopping after this step (again to stop at once)...")

    def _train_end(self, info: dict) -> None:
        if self.bar is not None:
            self.bar.close()
