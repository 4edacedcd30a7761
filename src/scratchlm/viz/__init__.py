"""See inside the model: attention maps, the Q/K/V walkthrough, attention evolving during training.

An extra: it imports the core, the core never imports it. The modules:

    metrics.py    what a head does, in numbers: entropy, previous-token, first-token, induction
    capture.py    attention maps and one head's Q, K, V from a real forward pass
    snapshots.py  RUN/attention/step_*.npz: the probe's maps and metrics at one step
    live.py       the recorder the training loop's events drive (`attach(events, cfg.viz)`)
    figures.py    the figures (matplotlib): `qkv_walkthrough`, `attention_grid`, `evolution`,
                  `curves`, `sampling`, `tokens`, `render_all`
    style.py      what the figures share: size, saving PNG + SVG

`scratchlm viz ...` (cli/viz.py) draws them from a run folder; docs/attention.md explains them.
This file imports nothing, so attaching the recorder does not load matplotlib.
"""
