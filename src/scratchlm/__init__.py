"""scratchlm: a GPT-style language model built from scratch, with a look inside.

The small public API, for notebooks and scripts (the commands call the same functions):

    import scratchlm
    summary = scratchlm.train("tiny", out="runs/mine", overrides={"train.max_steps": 200})
    run = scratchlm.load_run("runs/mine")      # .model (eval mode; model(ids) -> (logits, loss)),
                                               # .tokenizer, .config, .run_dir, .checkpoint
    for text in scratchlm.generate(run, "ROMEO:", max_new_tokens=100):
        print(text, end="")

The core path a learner reads in one sitting (docs/architecture.md has the reading order):
  tokenizer/  text -> integer ids (byte-level BPE, written out)
  model/      attention, transformer block, GPT, KV cache, the one-token decoder
  train/      the training loop, optimizer and schedule, checkpoints
  inference/  loading a run, sampling with a KV cache, streaming text
"""

__version__ = "0.1.0"

import types  # noqa: E402  (after __version__, which core modules read while this file is being imported)

from . import train as _train_package  # noqa: E402
from .config import RunConfig, build_config  # noqa: E402
from .inference import Run, generate, load_run  # noqa: E402
from .train import run_training  # noqa: E402


def train_job(config: "RunConfig | str | dict" = "default", out=None, *, overrides: dict | None = None,
          resume: bool = False, overwrite: bool = False, events=None, say=None) -> dict:
    """Run the training job and return its summary (step, val_loss, val_bpb, run_dir, ...).

    config: a RunConfig, a preset name ("tiny", "default", ...), a TOML file path, or a nested dict
    (as a run's config.json); `overrides` ({"train.lr": 1e-3}) are applied on top.
    out: the run folder (default runs/<preset>-<time>). `events`: subscribers to the loop's events
    (e.g. a progress bar); `say`: called with each start-up line (print, to see them). Prints nothing itself.
    """
    import time  # only needed for the default folder name

    if isinstance(config, RunConfig):
        cfg = build_config(base=_as_dict(config), overrides=overrides)
        name = "run"
    elif isinstance(config, dict):
        cfg, name = build_config(base=config, overrides=overrides), "run"
    elif str(config).endswith(".toml"):
        cfg, name = build_config(config_file=str(config), overrides=overrides), str(config).rsplit("/", 1)[-1][:-5]
    else:
        cfg, name = build_config(str(config), overrides=overrides), str(config)
    out = out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return run_training(cfg, out, resume=resume, overwrite=overwrite, events=events, say=say)


def _as_dict(cfg: RunConfig) -> dict:
    from .config import to_dict  # the same dict a run folder's config.json holds

    return to_dict(cfg)


class _TrainPackage(types.ModuleType):
    """`scratchlm.train` is both the training package (scratchlm.train.loop, ...) and the function
    `train_job` above: calling the package runs the job, so `scratchlm.train("tiny")` works."""

    def __call__(self, *args, **kwargs):
        return train_job(*args, **kwargs)


_train_package.__class__ = _TrainPackage
train = _train_package
del _train_package

__all__ = ["train", "train_job", "load_run", "generate", "Run", "RunConfig", "build_config", "__version__"]
