"""The training loop.

One optimizer step:
    for each micro-step:    loss = model(x, y) / accum_steps;  loss.backward()   (gradients add up)
    clip the gradient norm  (one bad batch cannot throw the weights far)
    check for NaN/Inf and spikes (the guard: a bad step is skipped, not applied)
    optimizer.step() at the scheduled learning rate
(fp16: the loss is scaled before backward and the gradients unscaled before clipping;
a step whose scaled gradients overflowed is skipped by the scaler, which lowers the
scale — routine loss scaling, not a bad step for the guard.)
After the step:
    `guard_max_bad` bad steps in a row  -> roll back to the newest healthy checkpoint
    still inside a bad streak           -> nothing is evaluated or saved (the weights may be drifting)
    every `eval_interval` steps          -> validation loss and bits per byte, a checkpoint
    every `checkpoint_interval` steps    -> a checkpoint
Under torchrun every rank runs this same loop on its own share of the data;
DistributedDataParallel averages gradients on the last micro-step only, and the ranks
agree every step on whether to stop (time, signal), so that all leave the loop together.

The loop prints nothing: it emits events (train/events.py) that a progress reporter,
the live doctor or a figure-maker subscribe to, and appends every record to metrics.jsonl.
"""

from __future__ import annotations

import errno
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..config import RunConfig, to_dict
from ..data.dataset import BatchSource, batch_source
from ..errors import ScratchLMError
from ..model import GPT
from ..tokenizer import Tokenizer
from . import checkpoint as ckpt
from .events import Events
from .flops import flops_per_token, peak_flops
from .guard import Guard
from .optim import freeze, lr_at, make_optimizer
from .runtime import (Runtime, StopRequested, all_reduce_sum, any_rank, fsdp_full_state, fsdp_load_state,
                      fsdp_wrap)


def token_byte_lengths(tok: Tokenizer, vocab_size: int) -> torch.Tensor:
    """UTF-8 bytes each token stands for (special tokens: 0, left out of bits per byte)."""
    lengths = [len(tok.token_bytes(i)) for i in range(tok.vocab_size)]
    for special_id in tok.special_tokens.values():
        lengths[special_id] = 0
    lengths += [0] * (vocab_size - len(lengths))
    return torch.tensor(lengths, dtype=torch.float64)


class Trainer:
    """One training run: the model, optimizer, batches, guard and checkpoints, and the loop (`fit`).

    `data` is {"train": X, "val": X}, where X is a 1-D array of token ids (drawn as random
    windows by `data.dataset.Batches`) or any batch source with the same interface
    (`data.dataset.BatchSource`: `get`, `eval_windows`, `num_tokens`), e.g. padded chat
    examples whose targets are -100 where no loss is wanted.
    `model`: start from this GPT (e.g. with pretrained weights) instead of a freshly
    initialised one; its config must be `cfg.model`.
    """

    def __init__(self, cfg: RunConfig, run_dir: Path, tok, tok_hash: str, data: dict, rt: Runtime,
                 events: Events | None = None, model: GPT | None = None):
        self.cfg, self.run_dir, self.tok, self.tok_hash, self.rt = cfg, Path(run_dir), tok, tok_hash, rt
        self.events = events or Events()
        tc = cfg.train
        # batch_size sequences per step = micro_batch_size × accum_steps × ranks
        self.micro_batch_size = tc.micro_batch_size or tc.batch_size // rt.world
        if self.micro_batch_size < 1 or tc.batch_size % (self.micro_batch_size * rt.world):
            raise ScratchLMError(f"train.batch_size={tc.batch_size} is not a multiple of micro_batch_size × ranks "
                                 f"= {self.micro_batch_size} × {rt.world}")
        self.accum_steps = tc.batch_size // (self.micro_batch_size * rt.world)
        # No rank in the seed: micro-batches are numbered globally (rank × accum_steps + micro_step),
        # so 2 ranks × 2 micro-steps draw exactly the windows 1 process × 4 micro-steps draws.
        T = cfg.model.block_size
        self.train_batches: BatchSource = batch_source(data["train"], T, rt.device, tc.seed, "training")
        self.val_batches: BatchSource = batch_source(data["val"], T, rt.device, tc.seed, "validation")
        torch.manual_seed(tc.seed)
        # handed trained weights (fine-tuning, --init-from): the doctor does not expect a first loss of ln(vocab)
        self.from_weights = model is not None
        if model is None:
            model = GPT(cfg.model)
        elif model.config != cfg.model:
            raise ScratchLMError("the model given to the Trainer was built with another config than cfg.model")
        self.model = self.raw_model = model.to(rt.device)
        freeze(model, tc.freeze)  # train.freeze: these weights stay as they are (no gradient, no optimizer state)
        self.token_bytes = token_byte_lengths(tok, cfg.model.vocab_size).to(rt.device)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype == "fp16")
        self._set_checkpointing(tc.activation_checkpointing)
        self.fsdp = rt.distributed and tc.fsdp
        if self.fsdp:  # shards the model in place; the optimizer must see the sharded parameters
            fsdp_wrap(self.model, rt)
        self.optimizer, self.optimizer_kind = make_optimizer(self.model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2),
                                                             "fsdp" if self.fsdp else rt.device.type,
                                                             tc.optimizer, tc.muon_lr_ratio, tc.key_shift_lr_ratio)
        if tc.compile:
            self.model = torch.compile(self.model)
        if rt.distributed and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel as DDP  # only under torchrun

            self.model = DDP(self.model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)
        self.flops_per_token = flops_per_token(cfg.model, self.raw_model.num_params())
        self.peak_flops, self.peak_source = None, ""  # measured at the start of `fit`: a CPU peak takes a second
        self.step = 0
        self._saved_step = None  # the step of the newest step_* checkpoint this run holds
        self.best_val = float("inf")
        self.warmup_end_progress = 0.0
        self.train_time = 0.0  # seconds spent training, carried across resumes
        self._timed_steps, self._timed_seconds = 0, 0.0  # this session's steady-state steps, for the ETA
        self.guard = Guard(tc)  # NaN/spike detector: bad steps are skipped; a streak of them rolls back
        self.data_skip = 0  # data position = step + data_skip; a rollback moves it past bad batches
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.ckpt_dir = self.run_dir / "checkpoints"

    # ---- set-up helpers -------------------------------------------------------
    def _set_checkpointing(self, mode: str) -> None:
        n = self.cfg.model.n_layer
        if mode == "blocks":
            self.raw_model.checkpoint_blocks = set(range(n))
        elif mode.startswith("every_"):
            k = int(mode[6:])
            self.raw_model.checkpoint_blocks = set(range(0, n, k))

    def tokens_per_step(self) -> int:
        return self.cfg.train.batch_size * self.cfg.model.block_size

    def describe(self) -> list[str]:
        """What a learner should see at start: sizes, derived values, and why."""
        cfg, tc, rt, m = self.cfg, self.cfg.train, self.rt, self.raw_model
        mc = cfg.model
        tps = self.tokens_per_step()
        n_train = self.train_batches.num_tokens
        opt_name = (f"Muon (block matrices, lr × {tc.muon_lr_ratio:g}) + AdamW (the rest)" if tc.optimizer == "muon"
                    else f"AdamW ({self.optimizer_kind})")
        if any("lr_scale" in g for g in self.optimizer.param_groups):
            opt_name += f", the key shift at lr × {tc.key_shift_lr_ratio:g}"
        if frozen := sum(p.numel() for p in m.parameters() if not p.requires_grad):
            opt_name += f", {frozen / 1e6:.2f}M parameters frozen (train.freeze={tc.freeze})"
        lines = [
            f"model      {m.num_params() / 1e6:.2f}M parameters ({m.num_params(False) / 1e6:.2f}M with position "
            f"embeddings): {mc.n_layer} layers × {mc.n_head} heads × {mc.n_embd} wide, context {mc.block_size}, "
            f"vocab {mc.vocab_size}",
            f"data       {n_train:,} training tokens, {self.val_batches.num_tokens:,} validation tokens",
            f"batch      {tc.batch_size} sequences × {mc.block_size} tokens = {tps:,} tokens per step "
            f"= {self.micro_batch_size} per micro-batch × {self.accum_steps} accumulation step(s) "
            f"× {rt.world} rank(s)",
            f"budget     {tc.max_steps:,} steps"
            + (f" or {tc.max_time:g} s, whichever ends first" if tc.max_time else "")
            + f"; {tc.max_steps * tps / max(1, n_train):.1f} epochs if all steps run",
            f"optimizer  {opt_name}, lr {tc.lr:g} → {tc.lr * tc.min_lr_ratio:g} ({tc.schedule}, "
            f"{tc.warmup_steps} warmup steps), weight decay {tc.weight_decay:g} on matrices, clip {tc.grad_clip:g}",
            f"device     {rt.device} — {rt.device_reason}; {torch.get_num_threads()} threads",
            f"dtype      {rt.dtype} — {rt.dtype_reason}",
            f"compute    {self.flops_per_token / 1e6:.1f} MFLOP per token (6N + attention) = "
            f"{self.flops_per_token * tps / 1e12:.2f} TFLOP per step; MFU is logged against the device's peak",
            f"loss       expect ≈ ln({mc.vocab_size}) = {math.log(mc.vocab_size):.2f} at step 0 (uniform guess)",
        ]
        if tc.activation_checkpointing != "none":
            lines.append(f"memory     activation checkpointing '{tc.activation_checkpointing}': "
                         "blocks recompute activations in backward")
        if rt.distributed:
            lines.append("parallel   " + ("FSDP: weights, gradients and AdamW state sharded over ranks" if self.fsdp
                                          else "DDP: a full copy per rank, gradients averaged on the last micro-step"))
        if tc.compile:
            lines.append("compile    torch.compile: the first steps are slow while kernels are generated")
        return lines

    def log(self, record: dict) -> None:
        """Append one record to metrics.jsonl (rank 0); a write that fails is one clear line."""
        if not self.rt.master:
            return
        try:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            why = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "cannot append"
            raise ScratchLMError(f"{why} while writing {self.metrics_path} ({e.strerror or e}); fix that, then "
                                 f"continue with: scratchlm train --resume {self.run_dir}") from None

    def warn(self, message: str) -> None:
        """A warning: kept in metrics.jsonl (even when nothing is printed) and emitted as an event."""
        self.log({"event": "warning", "step": self.step, "message": message})
        self.events.emit("warning", message=message)

    # ---- evaluation -----------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss (nats per token) and bits per byte, over fixed windows."""
        model = self.raw_model
        was_training = model.training
        model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.rt.device)  # loss, tokens, bytes
        # FSDP gathers weights inside forward (a collective): every rank must run the same
        # batches, so under FSDP each rank evaluates all windows and the sums are averaged.
        rank, world = (0, 1) if self.fsdp else (self.rt.rank, self.rt.world)
        for x, y in self.val_batches.eval_windows(self.cfg.train.eval_tokens, self.micro_batch_size, rank, world):
            with self.rt.autocast():
                _, loss = model(x, y, reduction="none")
            targets = y.reshape(-1)
            nbytes = self.token_bytes[targets.clamp(min=0)] * (targets >= 0)  # -100: a position without a target
            counted = nbytes > 0  # special tokens stand for no text
            sums[0] += loss.double()[counted].sum()
            sums[1] += counted.sum()
            sums[2] += nbytes.sum()
        all_reduce_sum(sums, self.rt)
        if self.fsdp:
            sums /= self.rt.world
        model.train(was_training)
        val_loss = (sums[0] / sums[1]).item()
        bpb = (sums[0] / (math.log(2) * sums[2])).item()
        return {"val_loss": val_loss, "val_bpb": bpb, "val_tokens": int(sums[1].item())}

    # ---- checkpoints ----------------------------------------------------------
    def _state(self) -> dict:
        return {"step": self.step, "best_val": self.best_val, "warmup_end_progress": self.warmup_end_progress,
                "train_time": self.train_time, "guard": self.guard.state_dict(),
                "config": to_dict(self.cfg), "tokenizer_hash": self.tok_hash,
                "data_position": {"step": self.step, "skip": self.data_skip}}

    def save(self, name: str | None = None) -> Path | None:
        """Write checkpoints/step_NNNNNNN (or `name`: best, final). Weights that are not finite are
        never written: a step checkpoint is left out with a warning, best/ or final/ end the run."""
        if self.fsdp:  # gathering the shards is a collective: every rank takes part, rank 0 writes
            model_sd, optim_sd = fsdp_full_state(self.raw_model, self.optimizer)
            if self.cfg.model.tie_embeddings:
                model_sd.pop("lm_head.weight", None)  # tied to transformer.wte.weight
            finite = not any_rank([not all(torch.isfinite(v).all() for v in model_sd.values())], self.rt)[0]
        else:
            finite = all(torch.isfinite(p).all() for p in self.raw_model.parameters())
        folder = self.ckpt_dir / (name or f"step_{self.step:07d}")
        if not finite:
            if name is None:
                self.warn(f"step {self.step}: the weights hold NaN or Inf; checkpoint {folder.name} not written")
                return None
            raise ScratchLMError(f"the weights hold NaN or Inf at step {self.step}, so {name}/ was not written; "
                                 "lower --train.lr (and keep --train.guard true)")
        if name is None:
            self._saved_step = self.step
        if not self.rt.master:
            return None
        if not self.fsdp:
            model_sd, optim_sd = ckpt.plain_state_dict(self.raw_model), self.optimizer.state_dict()
        scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None  # fp16: the current loss scale
        ckpt.save_checkpoint(folder, model_sd, optim_sd, self._state(), scaler=scaler)
        if name is None:
            ckpt.prune(self.ckpt_dir, self.cfg.train.keep_last)
        self.events.emit("checkpoint", step=self.step, path=str(folder), checkpoint=folder.name)
        return folder

    def load(self, folder: Path) -> None:
        state, model_sd, trainer = ckpt.load_checkpoint(folder)
        if state.get("tokenizer_hash") != self.tok_hash:
            raise ScratchLMError(f"checkpoint {folder} was trained with a different tokenizer; "
                                 "resume with the run's own tokenizer.json")
        if self.fsdp:  # full tensors in the file; each rank keeps its shard
            fsdp_load_state(self.raw_model, self.optimizer, model_sd, trainer["optimizer"])
        else:
            ckpt.load_model_weights(self.raw_model, model_sd, str(folder))
        try:
            if not self.fsdp:
                self.optimizer.load_state_dict(trainer["optimizer"])
        except (ValueError, KeyError) as e:
            raise ScratchLMError(f"checkpoint {folder} has optimizer state for another model ({e})") from None
        if self.scaler.is_enabled() and trainer.get("scaler"):
            self.scaler.load_state_dict(trainer["scaler"])
        ckpt.set_rng_state(state["rng"], trainer["rng"])
        self.step, self.best_val = state["step"], state["best_val"]
        self._saved_step = self.step
        self.warmup_end_progress, self.train_time = state["warmup_end_progress"], state["train_time"]
        self.guard.load_state_dict(state.get("guard", {}))
        self.data_skip = state.get("data_position", {}).get("skip", 0)

    def roll_back(self, reason: str) -> dict:
        """Back to the newest healthy checkpoint, skipping past the bad batches; returns the event.

        Called after the step counter has counted the bad step. The data position of the
        step that runs at counter s is s + data_skip (batches are a pure function of the
        position, see data/dataset.py), so the last bad batch was position
        p = step - 1 + data_skip. After going back to the checkpoint's step c, data_skip is
        set so that step c reads position p + 1: every batch from the checkpoint up to the
        last bad one is passed over. Rollbacks are counted per bad stretch (guard.py): a run
        that keeps diverging gives up instead of walking back and forth between checkpoints."""
        g, from_step = self.guard, self.step
        if g.rollbacks >= g.max_rollbacks:
            raise ScratchLMError(f"training diverges again after {g.rollbacks} rollbacks ({reason}) at step "
                                 f"{from_step}; "
                                 f"lower --train.lr (now scaled by {g.lr_scale:g}) or set --train.guard_lr_factor 0.5")
        folder = ckpt.latest_good_checkpoint(self.ckpt_dir, warn=self.warn, healthy_only=True)
        if folder is None:
            raise ScratchLMError(f"{g.streak} bad steps in a row ({reason}) at step {from_step} and no healthy "
                                 "checkpoint to roll back to; lower --train.lr or check the data")
        bad_position = self.step - 1 + self.data_skip
        rollbacks, lr_scale = g.rollbacks + 1, g.lr_scale * g.lr_factor
        self.load(folder)  # weights, optimizer, RNG, step, guard windows, data position
        g.rollbacks, g.lr_scale = rollbacks, lr_scale
        self.data_skip = bad_position + 1 - self.step
        event = {"event": "rollback", "reason": reason, "from_step": from_step, "to_step": self.step,
                 "checkpoint": folder.name, "data_skip": self.data_skip, "lr_scale": g.lr_scale}
        self.log(event)
        self.events.emit("rollback", **event, streak=rollbacks)
        return event

    # ---- the loop -------------------------------------------------------------
    def progress(self) -> float:
        tc = self.cfg.train
        p = self.step / tc.max_steps
        if tc.max_time:
            p = max(p, self.train_time / tc.max_time)
        return min(1.0, p)

    def train_step(self) -> dict:
        tc, rt, model = self.cfg.train, self.rt, self.model
        lr = lr_at(self.step, self.progress(), self.warmup_end_progress, tc) * self.guard.lr_scale
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)  # a group of its own may learn faster (key_shift_apart)
        loss_sum = torch.zeros((), device=rt.device)
        for micro_step in range(self.accum_steps):
            x, y = self.train_batches.get(self.step + self.data_skip, rt.rank * self.accum_steps + micro_step,
                                          self.micro_batch_size)
            last = micro_step == self.accum_steps - 1
            # DDP: average gradients across ranks only once, on the last micro-step
            sync = nullcontext() if (last or not rt.distributed or self.fsdp) else model.no_sync()
            if self.fsdp:  # FSDP's equivalent of no_sync: keep unsharded gradients until the last micro-step
                self.raw_model.set_requires_gradient_sync(last)
            with sync:
                with rt.autocast():
                    _, loss = model(x, y)
                loss = loss / self.accum_steps  # N micro-batches give the gradient of one N× batch
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: the norm over all shards, a DTensor
            grad_norm = grad_norm.full_tensor()
        loss_val = all_reduce_sum(loss_sum, rt).item() / rt.world
        norm_val = grad_norm.item()
        # fp16 overflow: a finite loss whose scaled gradients hit Inf. scaler.step skips the
        # update and scaler.update lowers the scale; the guard does not count it as bad.
        overflow = self.scaler.is_enabled() and math.isfinite(loss_val) and not math.isfinite(norm_val)
        bad = None if overflow else self.guard.check(loss_val, norm_val)
        if bad:  # skip the update: the weights and Adam's moments stay as they were
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss_val, "lr": lr, "grad_norm": norm_val, "clipped": bool(norm_val > clip), "skipped": bad,
                "overflow": overflow}

    def fit(self) -> dict:
        """Train until the step or time budget is spent or a signal asks to stop; returns the summary.
        Each step is logged and emitted; then a streak of bad steps rolls back, and otherwise
        evaluations and checkpoints come at their intervals (never inside a bad streak)."""
        tc = self.cfg.train
        self.model.train()
        self._begin()
        stopped_by, ev, record = None, None, {}
        with StopRequested(lambda: self.events.emit("stop_requested", step=self.step)) as stop:
            while stopped_by is None:
                stopped_by = self._stop_reason(stop.requested)
                if stopped_by:
                    break
                record = self._timed_step()
                if self.guard.must_roll_back:
                    self.roll_back(record["skipped"])
                elif self.guard.streak:  # inside a bad streak: nothing is evaluated or saved
                    continue
                elif self.step % tc.eval_interval == 0:
                    ev = self._eval_and_checkpoint()
                elif tc.checkpoint_interval and self.step % tc.checkpoint_interval == 0:
                    self.save()
            if stopped_by == "signal" and self._saved_step != self.step:
                self.save()  # first, before the final evaluation: a second Ctrl-C during it loses nothing
        if ev is None or ev["step"] != self.step:
            ev = self._eval_and_checkpoint(periodic=False)
        if stopped_by != "signal":
            self.save("final")
        summary = {"step": self.step, "stopped_by": stopped_by, "train_time": self.train_time,
                   "val_loss": ev["val_loss"], "val_bpb": ev["val_bpb"], "best_val_loss": self.best_val,
                   "final_train_loss": record.get("loss")}
        self.events.emit("train_end", **summary)
        return summary

    def _begin(self) -> None:
        """Measure the device's peak for MFU, announce the start, and (guard on, fresh run) save
        step 0, so that a rollback always has a healthy checkpoint to go back to."""
        rt = self.rt
        # (measuring draws random matrices: keep the global RNG untouched, or a resumed
        # run's dropout masks would differ from an uninterrupted run's)
        with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
            self.peak_flops, self.peak_source = peak_flops(rt.device, rt.dtype)
        tc = self.cfg.train
        self.events.emit("train_start", trainer=self, step=self.step, max_steps=tc.max_steps, max_time=tc.max_time,
                         tokens_per_step=self.tokens_per_step(), peak_flops=self.peak_flops,
                         peak_source=self.peak_source)
        if self.guard.enabled and self.step == 0:
            self.save()

    def _stop_reason(self, signalled: bool) -> str | None:
        """"steps", "time" or "signal" when the loop should end now, else None. Every rank has its
        own clock and signal handler; one leaving the loop alone would leave the others waiting
        in a collective, so they agree."""
        tc = self.cfg.train
        time_up, signalled = any_rank([bool(tc.max_time and self.train_time >= tc.max_time), signalled], self.rt)
        return "signal" if signalled else "time" if time_up else "steps" if self.step >= tc.max_steps else None

    def _timed_step(self) -> dict:
        """One step, timed; its record (with speed, MFU and ETA) is logged and emitted."""
        tc = self.cfg.train
        t0 = time.perf_counter()
        record = self.train_step()
        dt = time.perf_counter() - t0
        self.train_time += dt
        if self.step == tc.warmup_steps - 1:
            self.warmup_end_progress = self.progress()
        self.step += 1
        if self.step > 1:  # the first step pays for warm-up (allocations, kernel choice)
            self._timed_steps, self._timed_seconds = self._timed_steps + 1, self._timed_seconds + dt
        per_step = self._timed_seconds / self._timed_steps if self._timed_steps else dt  # step 1: its own time
        eta = (tc.max_steps - self.step) * per_step
        if tc.max_time:
            eta = min(eta, max(0.0, tc.max_time - self.train_time))
        tokens_per_s = self.tokens_per_step() / dt
        # MFU per device: each rank computes its share of the step's tokens
        mfu = tokens_per_s / self.rt.world * self.flops_per_token / self.peak_flops
        record = {"step": self.step, **record, "tokens_per_s": tokens_per_s, "mfu": mfu, "eta_s": eta,
                  "time": self.train_time}
        self.log(record)
        self.events.emit("step_end", **record)
        return record

    def _eval_and_checkpoint(self, periodic: bool = True) -> dict:
        ev = {"step": self.step, **self.evaluate()}
        self.log({"event": "eval", **ev})
        improved = ev["val_loss"] < self.best_val
        if improved:
            self.best_val = ev["val_loss"]
        self.events.emit("eval", **ev, best=improved)
        every = self.cfg.train.checkpoint_interval
        if (not periodic or not every or self.step % every == 0) and self._saved_step != self.step:
            self.save()
        if improved and self.cfg.train.keep_best:
            self.save("best")
        return ev
