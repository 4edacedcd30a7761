"""Training: the loop, the optimizer and schedule, checkpoints, and the run folder."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import RunConfig
from .events import Events


def run_training(cfg: RunConfig | None, out: str | Path, *, resume: bool = False, overwrite: bool = False,
                 quiet: bool = False, events: Events | None = None, sample: bool = True) -> dict:
    """The whole job: prepare the run folder, train, evaluate, sample, summarise.
    `events`: subscribers to the loop's events, e.g. the doctor's live detectors
    (`scratchlm.doctor.live.attach(Events())`, as `scratchlm train` does); the core
    imports none of them."""
    from ..errors import ScratchLMError
    from . import checkpoint as ckpt
    from .loop import Trainer
    from .prepare import prepare, write_run_files
    from .runtime import rank0_first, set_threads, setup_runtime, teardown

    tc = cfg.train if cfg is not None else None
    rt = setup_runtime(tc if tc is not None else RunConfig().train)
    try:
        threads = set_threads(tc.threads if tc is not None else 0)
        say = (lambda *a, **k: None) if (quiet or not rt.master) else print
        # under torchrun rank 0 fills the caches and writes the run folder first; the other
        # ranks then only read them (no two processes write one file, and no rank mistakes
        # the folder rank 0 has just written for "another run")
        p = rank0_first(lambda: prepare(cfg, out, resume=resume, overwrite=overwrite, say=say, master=rt.master), rt)
        if rt.distributed:
            import torch.distributed as dist

            dist.barrier()  # every rank has prepared: rank 0 may now change the run folder
        trainer = Trainer(p.cfg, p.run_dir, p.tok, p.tok_hash, p.data, rt, events=events, quiet=quiet)
        if resume:
            latest = ckpt.latest_good_checkpoint(p.run_dir / "checkpoints", warn=say)
            if latest is None:
                raise ScratchLMError(f"{p.run_dir} has no complete checkpoint to resume from")
            trainer.load(latest)
            if rt.master:  # accepted: now record the resumed run's config (a refused resume changes nothing)
                write_run_files(p)
            # metrics.jsonl may hold steps past this checkpoint (from a crash): they are redone
            trainer.log({"event": "resume", "step": trainer.step, "checkpoint": latest.name})
            say(f"resuming from {latest} (step {trainer.step})")
        for line in p.notes + trainer.describe():
            say(line)
        del threads
        summary = trainer.fit()
        if rt.master:
            summary["run_dir"] = str(p.run_dir)
            if sample and p.cfg.sample.num_samples and not quiet:
                _print_samples(trainer, p)
            if not quiet:
                _print_summary(summary, p)
        return summary
    finally:
        teardown(rt)


def _print_samples(trainer, p) -> None:
    from ..sample import sample_text

    print(f"\nsamples (temperature {p.cfg.sample.temperature}, top-p {p.cfg.sample.top_p}):")
    texts = sample_text(trainer.raw_model, p.tok, p.cfg.sample, out=sys.stdout)
    (p.run_dir / "samples.txt").write_text("\n\n".join(texts))


def _print_summary(s: dict, p) -> None:
    print(f"\nval loss {s['val_loss']:.4f} nats/token = {s['val_bpb']:.3f} bits per byte on held-out text "
          f"after {s['step']} steps ({s['train_time']:.0f} s of training; stopped by {s['stopped_by']})")
    print(f"run folder: {p.run_dir}  (config.json, tokenizer.json, metrics.jsonl, checkpoints/, samples.txt)")
    print("next:")
    print(f"  scratchlm sample {p.run_dir} --prompt 'ROMEO:' --temperature 0.8")
    print(f"  scratchlm train --resume {p.run_dir} --max-time 600        # train longer")
    print("  scratchlm train --model.n_embd 384 --train.max_time 900      # a wider model")
