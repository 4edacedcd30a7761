"""The training loop.

One optimizer step:
    for each micro-batch:   loss = model(x, y) / accum;  loss.backward()   (gradients add up)
    clip the gradient norm  (one bad batch cannot throw the weights far)
    check for NaN/Inf and spikes (a bad step is skipped, not applied)
    optimizer.step() at the scheduled learning rate
(fp16: the loss is scaled before backward and the gradients unscaled before clipping;
a step whose scaled gradients overflowed is skipped by the scaler, which lowers the
scale — routine loss scaling, not a bad step for the guard.)
Every `eval_interval` steps: validation loss and bits per byte, a checkpoint.
Under torchrun every rank runs this same loop on its own share of the data;
DistributedDataParallel averages gradients on the last micro-step only, and the ranks
agree every step on whether to stop (time, signal), so that all leave the loop together.
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import RunConfig, to_dict
from ..data.dataset import Batches
from ..errors import ScratchLMError
from ..model import GPT
from . import checkpoint as ckpt
from .events import Events
from .guard import Guard, SpikeGuard, roll_back  # noqa: F401  (SpikeGuard lived here before)
from .optim import lr_at, make_optimizer
from .flops import flops_per_token, mfu_hint, peak_flops
from .runtime import Runtime, all_reduce_sum, any_rank, fsdp_full_state, fsdp_load_state, fsdp_wrap


def token_byte_lengths(tok, vocab_size: int) -> torch.Tensor:
    """UTF-8 bytes each token stands for (special tokens: 0, left out of bits per byte)."""
    if hasattr(tok, "token_bytes"):  # byte-level BPE: the bytes each id decodes to
        lengths = [len(tok.token_bytes(i)) for i in range(tok.vocab_size)]
    else:
        lengths = [len(tok.decode([i]).encode("utf-8")) for i in range(tok.vocab_size)]
    for special_id in (getattr(tok, "special_tokens", None) or {}).values():
        lengths[special_id] = 0
    lengths += [0] * (vocab_size - len(lengths))
    return torch.tensor(lengths, dtype=torch.float64)


class StopRequested:
    """First Ctrl-C / SIGTERM: finish the step, checkpoint, exit. Second: exit at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt  # second signal: stop now (checkpoints are atomic)
        self.requested = True
        print("\nstopping after this step (again to stop at once)...", flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, tok, tok_hash: str, data: dict, rt: Runtime,
                 events: Events | None = None, quiet: bool = False):
        self.cfg, self.run_dir, self.tok, self.tok_hash, self.rt = cfg, Path(run_dir), tok, tok_hash, rt
        self.events = events or Events()
        self.quiet = quiet or not rt.master
        tc = cfg.train
        torch.manual_seed(tc.seed)
        self.model = GPT(cfg.model).to(rt.device)
        self.raw_model = self.model
        # batch_size sequences per step = micro_batch × accumulation × ranks
        micro = tc.micro_batch_size or tc.batch_size // rt.world
        if tc.batch_size % (micro * rt.world):
            raise ScratchLMError(f"train.batch_size={tc.batch_size} is not a multiple of micro_batch_size×ranks = {micro}×{rt.world}")
        self.micro, self.accum = micro, tc.batch_size // (micro * rt.world)
        # No rank in the seed: micro-batches are numbered globally (rank × accum + micro), so
        # 2 ranks × 2 micro-steps draw exactly the windows 1 process × 4 micro-steps draws.
        self.train_batches = Batches(data["train"], cfg.model.block_size, rt.device, tc.seed, split="training")
        self.val_batches = Batches(data["val"], cfg.model.block_size, rt.device, tc.seed, split="validation")
        self.token_bytes = token_byte_lengths(tok, cfg.model.vocab_size).to(rt.device)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype == "fp16")
        self._set_checkpointing(tc.activation_checkpointing)
        self.fsdp = rt.distributed and tc.fsdp
        if self.fsdp:  # shards the model in place; the optimizer must see the sharded parameters
            fsdp_wrap(self.model, rt)
        self.optimizer, self.optimizer_kind = make_optimizer(self.model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2),
                                                             "fsdp" if self.fsdp else rt.device.type)
        if tc.compile:
            self.model = torch.compile(self.model)
        if rt.distributed and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)
        self.flops_per_token = flops_per_token(cfg.model, self.raw_model.num_params())
        self.peak_flops, self.peak_source = None, ""  # measured lazily: a CPU peak takes a second
        self.step = 0
        self._saved_step = None  # the step of the newest step_* checkpoint this run holds
        self.best_val = float("inf")
        self.warmup_end_progress = 0.0
        self.train_time = 0.0  # seconds spent training, carried across resumes
        self.guard = Guard(tc)  # NaN/spike guard: skips bad steps, rolls back after guard_max_bad in a row
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
        n_params = m.num_params()
        tps = self.tokens_per_step()
        n_train = len(self.train_batches.data)
        lines = [
            f"model      {n_params / 1e6:.2f}M parameters ({m.num_params(False) / 1e6:.2f}M with position embeddings): "
            f"{cfg.model.n_layer} layers × {cfg.model.n_head} heads × {cfg.model.n_embd} wide, context {cfg.model.block_size}, vocab {cfg.model.vocab_size}",
            f"data       {n_train:,} training tokens, {len(self.val_batches.data):,} validation tokens",
            f"batch      {tc.batch_size} sequences × {cfg.model.block_size} tokens = {tps:,} tokens per step "
            f"= {self.micro} per micro-batch × {self.accum} accumulation step(s) × {rt.world} rank(s)",
            f"budget     {tc.max_steps:,} steps" + (f" or {tc.max_time:g} s, whichever ends first" if tc.max_time else "")
            + f"; {tc.max_steps * tps / max(1, n_train):.1f} epochs if all steps run",
            f"optimizer  AdamW ({self.optimizer_kind}), lr {tc.lr:g} → {tc.lr * tc.min_lr_ratio:g} ({tc.schedule}, {tc.warmup_steps} warmup steps), "
            f"weight decay {tc.weight_decay:g} on matrices, clip {tc.grad_clip:g}",
            f"device     {rt.device} — {rt.device_reason}; {torch.get_num_threads()} threads",
            f"dtype      {rt.dtype} — {rt.dtype_reason}",
            f"compute    {self.flops_per_token / 1e6:.1f} MFLOP per token (6N + attention) = "
            f"{self.flops_per_token * tps / 1e12:.2f} TFLOP per step; MFU is logged against the device's peak",
            f"loss       expect ≈ ln({cfg.model.vocab_size}) = {math.log(cfg.model.vocab_size):.2f} at step 0 (uniform guess)",
        ]
        if tc.activation_checkpointing != "none":
            lines.append(f"memory     activation checkpointing '{tc.activation_checkpointing}': blocks recompute activations in backward")
        if rt.distributed:
            lines.append("parallel   " + ("FSDP: weights, gradients and AdamW state sharded over ranks" if self.fsdp
                                          else "DDP: a full copy per rank, gradients averaged on the last micro-step"))
        if tc.compile:
            lines.append("compile    torch.compile: the first steps are slow while kernels are generated")
        return lines

    def say(self, message: str) -> None:
        """Print above the progress bar (nothing when quiet or not rank 0)."""
        if not self.quiet:
            tqdm.write(message)

    def log(self, record: dict) -> None:
        if self.rt.master:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

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
        for x, y in self.val_batches.eval_windows(self.cfg.train.eval_tokens, self.micro, rank, world):
            with self.rt.autocast():
                _, loss = model(x, y, reduction="none")
            nbytes = self.token_bytes[y.reshape(-1)]
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
        if self.fsdp:  # gathering the shards is a collective: every rank takes part, rank 0 writes
            model_sd, optim_sd = fsdp_full_state(self.raw_model, self.optimizer)
            model_sd.pop("lm_head.weight", None)  # tied to transformer.wte.weight
        if name is None:
            self._saved_step = self.step
        if not self.rt.master:
            return None
        if not self.fsdp:
            model_sd, optim_sd = ckpt.plain_state_dict(self.raw_model), self.optimizer.state_dict()
        folder = self.ckpt_dir / (name or f"step_{self.step:07d}")
        scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None  # fp16: the current loss scale
        ckpt.save_checkpoint(folder, model_sd, optim_sd, self._state(), scaler=scaler)
        if name is None:
            ckpt.prune(self.ckpt_dir, self.cfg.train.keep_last)
        self.events.emit("checkpoint", step=self.step, path=str(folder))
        return folder

    def load(self, folder: Path) -> None:
        state, model_sd, trainer = ckpt.load_checkpoint(folder)
        if state.get("tokenizer_hash") != self.tok_hash:
            raise ScratchLMError(f"checkpoint {folder} was trained with a different tokenizer; resume with the run's own tokenizer.json")
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
            g["lr"] = lr
        loss_sum = torch.zeros((), device=rt.device)
        for micro in range(self.accum):
            x, y = self.train_batches.get(self.step + self.data_skip, rt.rank * self.accum + micro, self.micro)
            last = micro == self.accum - 1
            # DDP: average gradients across ranks only once, on the last micro-step
            sync = nullcontext() if (last or not rt.distributed or self.fsdp) else model.no_sync()
            if self.fsdp:  # FSDP's equivalent of no_sync: keep unsharded gradients until the last micro-step
                self.raw_model.set_requires_gradient_sync(last)
            with sync:
                with rt.autocast():
                    _, loss = model(x, y)
                loss = loss / self.accum  # N micro-batches give the gradient of one N× batch
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
        tc, rt = self.cfg.train, self.rt
        self.model.train()
        self.events.emit("train_start", trainer=self)
        tokens_per_step = self.tokens_per_step()
        est_total = tc.max_steps
        bar = tqdm(total=est_total, initial=self.step, disable=self.quiet, unit="step", dynamic_ncols=True, mininterval=0.5)
        last = {}
        ev = None
        stopped_by = "steps"
        # MFU's denominator: a GPU table value, or a matmul timed here on a CPU (once per process)
        # (measuring it draws random matrices: keep the global RNG untouched, or a resumed
        # run's dropout masks would differ from an uninterrupted run's)
        with torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else []):
            self.peak_flops, self.peak_source = peak_flops(rt.device, rt.dtype)
        steps_timed, time_timed, hinted = 0, 0.0, False  # this session's steps, for the ETA
        if self.guard.enabled and self.step == 0:
            self.save()  # so that a rollback always has a good checkpoint to go back to
        with StopRequested() as stop:
            while self.step < tc.max_steps:
                # Every rank has its own clock and signal handler; a rank leaving the loop on
                # its own would leave the others waiting in a collective. So they agree.
                time_up, signalled = any_rank([bool(tc.max_time and self.train_time >= tc.max_time), stop.requested], rt)
                if signalled or time_up:
                    stopped_by = "signal" if signalled else "time"
                    break
                t0 = time.perf_counter()
                last = self.train_step()
                dt = time.perf_counter() - t0
                self.train_time += dt
                if self.step == tc.warmup_steps - 1:
                    self.warmup_end_progress = self.progress()
                self.step += 1
                tok_s = tokens_per_step / dt
                # MFU per device: each rank computes its share of the step's tokens
                step_mfu = tok_s / rt.world * self.flops_per_token / self.peak_flops
                if self.step > 1:  # the first step pays for warm-up (allocations, kernel choice)
                    steps_timed, time_timed = steps_timed + 1, time_timed + dt
                left_s = (tc.max_steps - self.step) * time_timed / max(1, steps_timed)
                if tc.max_time:
                    left_s = min(left_s, max(0.0, tc.max_time - self.train_time))
                record = {"step": self.step, **last, "tokens_per_s": tok_s, "mfu": step_mfu, "eta_s": left_s, "time": self.train_time}
                self.log(record)
                self.events.emit("step_end", **record)
                if tc.max_time and self.step > 5:  # the bar's total follows whichever budget binds
                    est = min(tc.max_steps, int(self.step * tc.max_time / max(self.train_time, 1e-9)))
                    if abs(est - bar.total) > 1:
                        bar.total = est
                bar.update(1)
                if self.step % tc.log_interval == 0 or self.step == 1:
                    bar.set_postfix_str(f"loss {last['loss']:.3f}  lr {last['lr']:.1e}  {tok_s / 1e3:.1f}k tok/s  "
                                        f"MFU {step_mfu:.0%}  ETA {_fmt_secs(left_s)}", refresh=False)
                if steps_timed == 10 and not hinted:  # a steady-state reading, said once
                    hinted = True
                    avg_mfu = tokens_per_step * steps_timed / time_timed / rt.world * self.flops_per_token / self.peak_flops
                    hint = mfu_hint(avg_mfu, rt.device.type)
                    if hint and not self.quiet:
                        self.say(f"hint: {hint} (peak: {self.peak_source}, {self.peak_flops / 1e12:.2f} TFLOP/s)")
                if last["skipped"] and not self.quiet:
                    self.say(f"step {self.step}: update skipped, {last['skipped']}")
                if self.guard.must_roll_back:  # guard_max_bad bad steps in a row: back to the last good checkpoint
                    rb = roll_back(self, last["skipped"])
                    bar.n = self.step
                    if not self.quiet:
                        self.say(f"rolled back from step {rb['from_step']} to {rb['checkpoint']} (step {rb['to_step']}); "
                                  f"data skips ahead to position {self.step + self.data_skip}; lr × {rb['lr_scale']:g}")
                elif self.step % tc.eval_interval == 0:
                    ev = self._eval_and_checkpoint(bar)
                elif tc.checkpoint_interval and self.step % tc.checkpoint_interval == 0:
                    self.save()
            bar.close()
            if stopped_by == "signal" and self._saved_step != self.step:
                self.save()  # first, before the final evaluation: a second Ctrl-C during it loses nothing
        if ev is None or ev["step"] != self.step:
            ev = self._eval_and_checkpoint(None, periodic=False)
        if stopped_by == "signal":
            if rt.master:
                print(f"stopped at step {self.step}; checkpoint written. Resume with: scratchlm train --resume {self.run_dir}")
        else:
            self.save("final")
        summary = {"step": self.step, "stopped_by": stopped_by, "train_time": self.train_time, **{k: ev[k] for k in ("val_loss", "val_bpb")},
                   "best_val_loss": self.best_val, "final_train_loss": last.get("loss")}
        self.events.emit("train_end", **summary)
        return summary

    def _eval_and_checkpoint(self, bar, periodic: bool = True) -> dict:
        ev = {"step": self.step, **self.evaluate()}
        self.log({"event": "eval", **ev})
        improved = ev["val_loss"] < self.best_val
        if improved:
            self.best_val = ev["val_loss"]
        if bar is not None:  # periodic evaluations are reported as they happen
            self.say(f"step {self.step:>6}: val loss {ev['val_loss']:.4f}, {ev['val_bpb']:.3f} bits/byte" + (" (best)" if improved else ""))
        self.events.emit("eval", **ev)
        every = self.cfg.train.checkpoint_interval
        if (not periodic or not every or self.step % every == 0) and self._saved_step != self.step:
            self.save()
        if improved and self.cfg.train.keep_best:
            self.save("best")
        return ev


def _fmt_secs(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
