"""Resume: an interrupted run continues exactly, and no way of stopping it (Ctrl-C, SIGTERM,
SIGKILL mid-step or mid-checkpoint) leaves the run folder without a loadable checkpoint.

The killed runs are real subprocesses of the `scratchlm` command. To kill one *during*
a checkpoint write, a small driver makes the write of one chosen checkpoint pause after
its first file (and say so with a marker file), then the test sends the signal."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from scratchlm.config import build_config
from scratchlm.train import checkpoint as ckpt
from scratchlm.train import run_training
from scratchlm.train.events import Events

SMALL = {"data.tokenizer": "char", "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.block_size": 32,
         "model.dropout": 0.1,  # dropout draws from the torch RNG: resuming must restore it exactly
         "train.batch_size": 8, "train.warmup_steps": 2, "train.eval_tokens": 512, "train.dtype": "fp32",
         "train.device": "cpu", "train.compile": False, "train.threads": 1, "sample.num_samples": 0,
         "viz.figures": "false"}  # the ~20 end-of-training figures: seconds in a subprocess, not what is tested

# Runs the CLI; the write of checkpoint PAUSE_AT stops after its first file until killed.
DRIVER = """
import os, sys, time
from pathlib import Path
import scratchlm.train.checkpoint as ck
pause_at, marker = os.environ.get("PAUSE_AT"), os.environ.get("MARKER")
real_fsync = ck._fsync
def fsync(path):
    real_fsync(path)
    if pause_at and Path(path).parent.name.startswith(f".tmp-{pause_at}-"):
        Path(marker).write_text(str(path))
        time.sleep(120)
ck._fsync = fsync
from scratchlm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_args(corpus, run, max_steps, **over):
    args = ["train", "--preset", "tiny", "--data", str(corpus), "--out", str(run), "--max-steps", str(max_steps), "--quiet"]
    return args + [f"--{k}={v}" for k, v in {**SMALL, **over}.items()]


def start(args, **env):
    return subprocess.Popen([sys.executable, "-c", DRIVER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


def wait_for(cond, proc, timeout=120.0):
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def steps_logged(run) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"loss"' in line)


def losses_by_step(run) -> dict[int, float]:
    """The last loss logged for each step (a crashed run's steps after its checkpoint are redone)."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "loss" in r:
            out[r["step"]] = r["loss"]
    return out


def resume(run, *extra, timeout=180):
    return subprocess.run([sys.executable, "-m", "scratchlm", "train", "--resume", str(run), "--quiet", *extra],
                          capture_output=True, text=True, timeout=timeout)


def test_stopped_and_resumed_run_gives_identical_losses(tmp_path, small_corpus, capsys):
    """2N steps in one go == N steps, Ctrl-C, then resumed (in a new process) for N more."""
    over = {**SMALL, "data.path": str(small_corpus), "train.max_steps": 16, "train.eval_interval": 100}
    straight = tmp_path / "straight"
    run_training(build_config("tiny", overrides=over), straight)

    stopped = tmp_path / "stopped"
    events = Events()
    events.on("step_end", lambda info: info["step"] == 8 and os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C during step 8
    requests = []
    events.on("stop_requested", requests.append)
    summary = run_training(build_config("tiny", overrides=over), stopped, events=events)
    assert summary["stopped_by"] == "signal" and summary["step"] == 8
    assert requests == [{"step": 8}] and capsys.readouterr().out == ""  # the core prints nothing
    assert ckpt.latest_good_checkpoint(stopped / "checkpoints") == stopped / "checkpoints" / "step_0000008"

    done = resume(stopped)
    assert done.returncode == 0, done.stderr
    a, b = losses_by_step(straight), losses_by_step(stopped)
    assert list(a) == list(range(1, 17)) and a == b  # identical, step by step, bit for bit
    wa = load_file(str(straight / "checkpoints" / "final" / ckpt.MODEL_FILE))
    wb = load_file(str(stopped / "checkpoints" / "final" / ckpt.MODEL_FILE))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume(tmp_path, small_corpus):
    run = tmp_path / "run"
    proc = start(cli_args(small_corpus, run, 100000, **{"train.eval_interval": 100000}))
    wait_for(lambda: steps_logged(run) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    step = max(losses_by_step(run))
    assert f"stopped at step {step}; checkpoint written. Resume with: scratchlm train --resume {run}" in out
    assert ckpt.verify(run / "checkpoints" / f"step_{step:07d}")["step"] == step


def test_sigkill_during_training_then_resume(tmp_path, small_corpus):
    run = tmp_path / "run"
    proc = start(cli_args(small_corpus, run, 100000, **{"train.eval_interval": 100000, "train.checkpoint_interval": 4}))
    wait_for(lambda: steps_logged(run) >= 6, proc)
    proc.kill()  # SIGKILL: no handler runs, nothing is flushed
    proc.communicate()
    latest = ckpt.latest_good_checkpoint(run / "checkpoints")
    assert latest is not None and ckpt.verify(latest)["step"] >= 4
    done = resume(run, "--max-steps", str(ckpt.verify(latest)["step"] + 3))
    assert done.returncode == 0, done.stderr
    assert ckpt.verify(run / "checkpoints" / "final")["step"] == ckpt.verify(latest)["step"] + 3


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, small_corpus):
    run, marker = tmp_path / "run", tmp_path / "writing"
    proc = start(cli_args(small_corpus, run, 100000, **{"train.eval_interval": 100000, "train.checkpoint_interval": 4}),
                 PAUSE_AT="step_0000008", MARKER=str(marker))
    wait_for(marker.exists, proc)  # step_0000008 is half written
    proc.kill()
    proc.communicate()
    ckdir = run / "checkpoints"
    assert list(ckdir.glob(".tmp-step_0000008-*")) and not (ckdir / "step_0000008").exists()
    assert ckpt.latest_good_checkpoint(ckdir) == ckdir / "step_0000004"
    done = resume(run, "--max-steps", "10")
    assert done.returncode == 0, done.stderr
    assert ckpt.verify(ckdir / "final")["step"] == 10
    assert not list(ckdir.glob(".tmp-*"))  # the dead writer's leftovers are cleaned up


def test_second_ctrl_c_exits_at_once_without_corrupting_the_last_checkpoint(tmp_path, small_corpus):
    run, marker = tmp_path / "run", tmp_path / "writing"
    proc = start(cli_args(small_corpus, run, 100000, **{"train.eval_interval": 100000, "train.checkpoint_interval": 4}),
                 PAUSE_AT="step_0000008", MARKER=str(marker))
    wait_for(marker.exists, proc)  # in the middle of writing step_0000008
    proc.send_signal(signal.SIGINT)  # first: "stopping after this step"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # second: stop now
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "stopping after this step" in out and err.strip().endswith("interrupted")
    ckdir = run / "checkpoints"
    assert not list(ckdir.glob(".tmp-*")) and not (ckdir / "step_0000008").exists()  # the half-written one is removed
    assert ckpt.latest_good_checkpoint(ckdir) == ckdir / "step_0000004"


@pytest.mark.parametrize("bad", ["shape", "tokenizer"])
def test_resume_refuses_a_checkpoint_that_does_not_match(tmp_path, small_corpus, bad):
    run = tmp_path / "run"
    run_training(build_config("tiny", overrides={**SMALL, "data.path": str(small_corpus), "train.max_steps": 2}), run)
    if bad == "tokenizer":
        tok = json.loads((run / "tokenizer.json").read_text())
        tok["chars"] = tok["chars"][::-1]  # same size, other ids: the weights would mean nothing
        (run / "tokenizer.json").write_text(json.dumps(tok))
    before = snapshot(run)
    if bad == "shape":
        done = resume(run, "--model.n_embd", "64")
        assert "model.n_embd cannot change on resume" in done.stderr
    else:
        done = resume(run, "--max-steps", "4")  # an override that an accepted resume would write to config.json
        assert "was trained with a different tokenizer" in done.stderr
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert snapshot(run) == before  # a refused resume leaves the run folder exactly as it was


def snapshot(run) -> dict:
    return {str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "run.lock"}  # (the lock file names its latest holder)


def test_a_signal_stop_writes_its_checkpoint_before_the_final_evaluation(tmp_path, small_corpus):
    """So that a second Ctrl-C during that evaluation cannot lose the step's checkpoint."""
    order, events = [], Events()
    events.on("step_end", lambda info: info["step"] == 3 and os.kill(os.getpid(), signal.SIGINT))
    events.on("checkpoint", lambda info: order.append(("checkpoint", info["step"], os.path.basename(info["path"]))))
    events.on("eval", lambda info: order.append(("eval", info["step"])))
    over = {**SMALL, "data.path": str(small_corpus), "train.max_steps": 10, "train.eval_interval": 100, "train.keep_best": False}
    summary = run_training(build_config("tiny", overrides=over), tmp_path / "run", events=events)
    assert summary["stopped_by"] == "signal"
    assert order[-2:] == [("checkpoint", 3, "step_0000003"), ("eval", 3)]  # one checkpoint, then the evaluation
