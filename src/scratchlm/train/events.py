"""Events the training loop emits, so other tools can watch without the core knowing them.

    events = Events()
    events.on("step_end", lambda info: ...)    # info: a dict of this step's metrics
    events.on("eval", ...), events.on("checkpoint", ...), events.on("train_end", ...)

Diagnostics, attention snapshots and reports subscribe here; the core never imports them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

EVENT_NAMES = ("train_start", "step_end", "eval", "checkpoint", "train_end")


class Events:
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
