"""Training: the loop, the optimizer and schedule, checkpoints, the guard, and the run folder.

    from scratchlm.train import run_training
    summary = run_training(cfg, "runs/mine", say=print)      # see train/job.py

Reading order: job.py (the whole job) → loop.py (the Trainer and its step) → optim.py,
guard.py, checkpoint.py, runtime.py; prepare.py and run_folder.py hold what comes before
the first step.
"""

from .job import run_training

__all__ = ["run_training"]
