"""Runs that never lie (issue 21): a run never deletes what is not its own, never exits 0 with a
broken model, takes a lock on its folder, resumes only what it can resume, checks its token
cache, and answers a user's mistake with one line (exit 2) and nothing half-written."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import SMALL_TEXT
from scratchlm.cli import main
from scratchlm.config import build_config
from scratchlm.data.corpus import load_corpus
from scratchlm.data.dataset import tokenize_corpus
from scratchlm.errors import ScratchLMError
from scratchlm.tokenizer import CharTokenizer, tokenizer_hash
from scratchlm.train import checkpoint as ckpt
from scratchlm.train import run_training
from scratchlm.train.run_folder import LOCK, MARKER, RunFolder
from test_guard import poison, records, small_cfg  # noqa: F401  (poison is a fixture)

SMALL = ["--data.tokenizer", "char", "--model.n_layer", "1", "--model.n_head", "2", "--model.n_embd", "32",
         "--model.block_size", "32", "--train.batch_size", "4", "--train.eval_tokens", "256", "--train.warmup_steps", "1",
         "--train.dtype", "fp32", "--train.device", "cpu", "--sample.num_samples", "0", "--viz.figures", "false"]


def train(data, out, *extra):
    return main(["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--quiet", "--max-steps", "2",
                 "--no-doctor", *SMALL, *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(SMALL_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def run(tmp_path, data):
    """A small finished run (step checkpoints at 0 and 2, final)."""
    out = tmp_path / "run"
    assert train(data, out) == 0
    return out


# ---- data loss: --overwrite removes only a run ---------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, data, capsys):
    folder = tmp_path / "r12"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "thesis.tex").write_text("precious")
    for extra in ((), ("--overwrite",)):
        assert train(data, folder, *extra) == 2
        assert "holds config.json but is not a scratchlm run folder" in one_error_line(capsys)
    assert (folder / "thesis.tex").read_text() == "precious" and (folder / "config.json").read_text() == "{}"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "thesis.tex"]


def test_overwrite_refuses_a_run_holding_other_files_and_replaces_a_clean_one(run, data, capsys):
    assert json.loads((run / MARKER).read_text())["format"] == "scratchlm-run"
    (run / "notes.md").write_text("mine")
    assert train(data, run, "--overwrite") == 2
    assert "also holds notes.md, which a run does not write" in one_error_line(capsys)
    assert (run / "notes.md").exists() and (run / "checkpoints" / "final").is_dir()
    (run / "notes.md").unlink()
    assert train(data, run, "--overwrite", "--max-steps", "1") == 0
    assert ckpt.verify(run / "checkpoints" / "final")["step"] == 1


def test_new_run_in_an_ordinary_folder_leaves_its_files_alone(tmp_path, data):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "paper.tex").write_text("x")
    assert train(data, folder) == 0
    assert (folder / "paper.tex").read_text() == "x" and (folder / MARKER).is_file()


# ---- the guard: healthy checkpoints only, rollbacks counted per bad stretch ----------

def test_frequent_checkpoints_do_not_let_the_guard_loop(tmp_path, small_corpus, poison, capsys):  # noqa: F811
    """Every step checkpointed and every batch from position 3 on bad: the run gives up after 3
    rollbacks, each to a checkpoint written while the run was healthy (before: one rollback per
    fresh checkpoint, forever, then exit 0)."""
    for pos in range(3, 500):
        poison[pos] = "nan"
    run = tmp_path / "run"
    with pytest.raises(ScratchLMError, match="training diverges again after 3 rollbacks"):
        run_training(small_cfg(small_corpus, **{"train.max_steps": 60, "train.eval_interval": 100,
                                                "train.checkpoint_interval": 1, "train.keep_last": 100,
                                                "train.guard_max_bad": 2}), run)
    rollbacks = [r for r in records(run) if r.get("event") == "rollback"]
    assert len(rollbacks) == 3
    for name in {r["checkpoint"] for r in rollbacks}:
        assert ckpt.verify(run / "checkpoints" / name)["guard"]["healthy"]
    skipped = {r["step"] for r in records(run) if r.get("skipped")}
    written = {int(p.name[5:]) for p in ckpt.step_checkpoints(run / "checkpoints")}
    assert written == {0, 1, 2, 3}  # nothing checkpointed inside a bad streak
    assert not skipped & written
    assert not (run / "checkpoints" / "final").exists()


def test_a_stretch_ends_after_a_window_of_healthy_steps(small_corpus):
    from scratchlm.train.guard import Guard

    g = Guard(build_config("tiny", overrides={"train.guard_window": 5}).train)
    g.rollbacks = 2
    for _ in range(4):
        g.check(1.0, 1.0)
    assert g.rollbacks == 2
    g.check(1.0, 1.0)
    assert g.rollbacks == 0


# ---- non-finite numbers ----------------------------------------------------------------

@pytest.mark.parametrize("args, expect", [
    (["--train.lr", "inf"], "'train.lr': inf (must be a finite number)"),
    (["--train.lr", "1e308"], "'train.lr': 1e+308 (the learning rate must be positive, at most 10)"),
    (["--train.lr", "nan"], "'train.lr': nan (must be a finite number)"),
    (["--train.max_time", "inf"], "'train.max_time': inf"),
    (["--sample.temperature", "inf"], "'sample.temperature': inf"),
    (["--train.log_interval", "0"], "'train.log_interval': 0"),
    (["--train.seed", "-1"], "'train.seed': -1"),
    (["--train.checkpoint_interval", "-1"], "'train.checkpoint_interval': -1"),
    (["--sample.num_samples", "-1"], "'sample.num_samples': -1"),
    (["--train.device", "tpu"], "'train.device': 'tpu' (auto, cpu, cuda, cuda:N or mps)"),
])
def test_bad_values_are_one_line_and_write_nothing(tmp_path, data, capsys, args, expect):
    assert train(data, tmp_path / "run", *args) == 2
    assert expect in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu(tmp_path, data, capsys):
    assert train(data, tmp_path / "run", "--train.device", "cuda") == 2
    assert "no CUDA GPU is available here" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_sample_refuses_a_huge_seed_and_non_finite_weights(run, capsys):
    assert main(["sample", str(run), "--seed", str(2**70), "--max-new-tokens", "2"]) == 2
    assert "'sample.seed'" in one_error_line(capsys)
    folder = run / "checkpoints" / "final"
    weights = load_file(str(folder / ckpt.MODEL_FILE))
    name = next(iter(weights))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(folder / ckpt.MODEL_FILE))
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    manifest["files"][ckpt.MODEL_FILE] = ckpt._sha256(folder / ckpt.MODEL_FILE)
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest))
    assert main(["sample", str(folder), "--max-new-tokens", "2"]) == 2
    assert f"holds NaN or Inf weights ({name})" in one_error_line(capsys)


# ---- sizes that cannot fit --------------------------------------------------------------

@pytest.mark.parametrize("args", [["--model.n_embd", "200000", "--model.n_head", "2"],
                                  ["--train.batch_size", "1000000"]])
def test_sizes_that_cannot_fit_are_refused_before_allocating(tmp_path, data, capsys, args):
    assert train(data, tmp_path / "run", *args) == 2
    line = one_error_line(capsys)
    assert "this run needs about" in line and "RAM is" in line
    assert not (tmp_path / "run").exists()


# ---- the lock ---------------------------------------------------------------------------

def test_a_second_writer_is_refused_naming_the_holder(tmp_path, data, capsys):
    first = RunFolder(tmp_path / "run")
    first.claim(resume=False)
    second = RunFolder(tmp_path / "run")
    with pytest.raises(ScratchLMError, match=rf"is in use by pid {os.getpid()} on "):
        second.claim(resume=True)  # (no config.json yet: the lock is what it is refused for)
    with pytest.raises(ScratchLMError, match=rf"is in use by pid {os.getpid()} on "):
        second.claim(resume=False, overwrite=True)
    assert train(data, tmp_path / "run", "--overwrite") == 2
    assert f"in use by pid {os.getpid()}" in one_error_line(capsys)
    first.release()
    second.claim(resume=False, overwrite=True)  # released: free again
    second.release()


def test_the_lock_is_stale_after_a_crash(tmp_path):
    folder = tmp_path / "run"
    code = (f"from scratchlm.train.run_folder import RunFolder; RunFolder({str(folder)!r}).claim(resume=False); "
            "import os, signal; print('locked', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "locked" in proc.stdout
    assert "pid" in (folder / LOCK).read_text()  # the holder's note is still there, the lock is not
    again = RunFolder(folder)
    again.claim(resume=False, overwrite=True)
    again.release()


@pytest.mark.slow
def test_resume_while_training_is_refused(tmp_path, data):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scratchlm", "train", "--preset", "tiny", "--data", str(data), "--out", str(out),
           "--quiet", "--no-doctor", "--max-steps", "100000", *SMALL]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600  # (a loaded machine can take minutes to start)
        while not (out / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "metrics.jsonl").exists()
        second = subprocess.run([sys.executable, "-m", "scratchlm", "train", "--resume", str(out), "--quiet"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "is in use by pid" in second.stderr and "Traceback" not in second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=600)
    assert proc.returncode == 0


# ---- resume changes only what it may -------------------------------------------------------

@pytest.mark.parametrize("args, key", [(["--data.tokenizer", "bpe"], "data.tokenizer"),
                                       (["--data.vocab_size", "1024"], "data.vocab_size"),
                                       (["--train.lr", "0.01"], "train.lr"),
                                       (["--data", "OTHER"], "data.path")])
def test_resume_refuses_changes_other_than_the_budget(run, tmp_path, capsys, args, key):
    if args[-1] == "OTHER":
        other = tmp_path / "other.txt"
        other.write_text(SMALL_TEXT.upper())
        args = ["--data", str(other)]
    before = (run / "config.json").read_text()
    assert main(["train", "--resume", str(run), "--quiet", "--no-doctor", "--max-steps", "3", *args]) == 2
    assert f"{key} cannot change on resume" in one_error_line(capsys)
    assert (run / "config.json").read_text() == before


def test_resume_from_another_folder_with_a_longer_budget(run, tmp_path, monkeypatch):
    cfg = json.loads((run / "config.json").read_text())
    assert os.path.isabs(cfg["data"]["path"])  # stored absolute: works from any working directory
    monkeypatch.chdir(tmp_path / "run" / "checkpoints")
    assert main(["train", "--resume", str(run), "--quiet", "--no-doctor", "--max-steps", "3"]) == 0
    assert ckpt.verify(run / "checkpoints" / "final")["step"] == 3


# ---- the token cache ---------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, data):
    corpus = load_corpus(str(data))
    tok = CharTokenizer.train(SMALL_TEXT)
    root = tmp_path / "cache"
    ids = tokenize_corpus(corpus, tok, tokenizer_hash(tok), cache=root)
    folder = next((root / "tokens").iterdir())
    return corpus, tok, root, folder, np.array(ids["train"])


def test_token_cache_records_size_and_checksum(cache):
    corpus, tok, root, folder, train_ids = cache
    meta = json.loads((folder / "meta.json").read_text())["train"]
    assert meta["bytes"] == (folder / "train.bin").stat().st_size == train_ids.nbytes
    import hashlib
    assert meta["sha256"] == hashlib.sha256((folder / "train.bin").read_bytes()).hexdigest()


@pytest.mark.parametrize("damage, verify, why", [
    ("truncate", False, "has 20 bytes, not"),
    ("out of vocabulary", False, "outside the vocabulary"),
    ("edit", True, "fails its checksum"),
])
def test_a_damaged_token_cache_is_rebuilt(cache, damage, verify, why):
    corpus, tok, root, folder, train_ids = cache
    path = folder / "train.bin"
    ids = np.fromfile(path, dtype=train_ids.dtype)
    if damage == "truncate":
        ids[:10].tofile(path)
    else:
        ids[5] = 60000 if damage == "out of vocabulary" else (ids[5] + 1) % tok.vocab_size
        ids.tofile(path)
    warnings = []
    again = tokenize_corpus(corpus, tok, tokenizer_hash(tok), cache=root, verify=verify, warn=warnings.append)
    assert len(warnings) == 1 and why in warnings[0] and "rebuilding it" in warnings[0]
    assert np.array_equal(np.array(again["train"]), train_ids)


def test_an_edit_within_the_vocabulary_needs_verify(cache):
    corpus, tok, root, folder, train_ids = cache
    ids = np.fromfile(folder / "train.bin", dtype=train_ids.dtype)
    ids[5] = (ids[5] + 1) % tok.vocab_size
    ids.tofile(folder / "train.bin")
    warnings = []
    tokenize_corpus(corpus, tok, tokenizer_hash(tok), cache=root, warn=warnings.append)
    assert warnings == []  # the cheap checks (sizes, id range) pass: the checksum is for --verify


def test_a_full_disk_while_writing_the_token_cache(tmp_path, data, monkeypatch):
    from scratchlm.data import dataset

    class FullDisk(np.ndarray):
        def tofile(self, path, *a, **k):  # numpy reports a short write as an OSError without an errno
            open(path, "wb").write(b"\0" * 8)
            raise OSError("8 requested and 0 written")

    encode = dataset._encode_docs
    monkeypatch.setattr(dataset, "_encode_docs", lambda tok, docs: encode(tok, docs).view(FullDisk))
    corpus = load_corpus(str(data))
    tok = CharTokenizer.train(SMALL_TEXT)
    with pytest.raises(ScratchLMError, match="cannot write the token cache in .* free some space"):
        tokenize_corpus(corpus, tok, tokenizer_hash(tok), cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.tmp")) and not list((tmp_path / "cache").rglob("meta.json"))


# ---- one line instead of a traceback; nothing half-written ------------------------------

def test_out_that_is_a_file_or_under_a_file(tmp_path, data, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert train(data, afile) == 2
    assert "is a file, not a folder" in one_error_line(capsys)
    assert train(data, afile / "run") == 2
    assert "is a file, not a folder" in one_error_line(capsys)
    assert afile.read_text() == "x"


def test_a_read_only_folder(tmp_path, data, run, capsys, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *a, **k):  # (the tests may run as root, which chmod does not stop)
        if str(path).startswith(str(tmp_path / "ro")) or (str(path).startswith(str(run)) and flags & os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    (tmp_path / "ro").mkdir()
    assert train(data, tmp_path / "ro" / "run") == 2
    assert "cannot write the run folder" in one_error_line(capsys)
    assert main(["train", "--resume", str(run), "--quiet", "--no-doctor", "--max-steps", "3"]) == 2
    assert "cannot write the run folder" in one_error_line(capsys)


@pytest.mark.parametrize("content, expect", [("{not json", "is damaged"), ("[1, 2]", "not a scratchlm config (a JSON list")])
def test_a_corrupt_config_on_resume(run, capsys, content, expect):
    (run / "config.json").write_text(content)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert expect in one_error_line(capsys)


def test_config_pointing_at_a_binary_file(tmp_path, capsys):
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["train", "--config", str(binary), "--out", str(tmp_path / "run")]) == 2
    assert "is not text (not UTF-8)" in one_error_line(capsys)


def test_a_refused_start_leaves_no_half_made_folder(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be, that is the question\n" * 5)  # 20 validation tokens
    assert train(short, tmp_path / "run") == 2
    assert "too short for one context window" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()
    assert train(short, tmp_path / "run", "--model.block_size", "8") == 0  # the same --out works


# ---- smaller ------------------------------------------------------------------------------

def test_a_torn_metrics_line_is_repaired_on_resume_and_warnings_are_logged(run, capsys):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a full disk mid-append
    ckpt_dir = run / "checkpoints"
    (ckpt_dir / "final" / ckpt.MANIFEST).write_text(json.dumps({"files": {}}))  # a manifest that vouches for nothing
    assert main(["train", "--resume", str(run), "--quiet", "--no-doctor", "--max-steps", "4"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "removed a torn last line" in err and "does not list model.safetensors" in err
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]  # every line parses
    warnings = [r["message"] for r in recs if r.get("event") == "warning"]
    assert any("torn last line" in w for w in warnings) and any("does not list" in w for w in warnings)
    assert [r for r in recs if r.get("event") == "resume"][0]["checkpoint"] == "step_0000002"


def test_sample_falls_back_when_best_is_corrupt(run, capsys):
    best = run / "checkpoints" / "best"
    (best / ckpt.MODEL_FILE).write_bytes(b"garbage")
    assert main(["sample", str(run), "--max-new-tokens", "3", "--num-samples", "1"]) == 0
    err = capsys.readouterr().err
    assert "fails its checksum" in err and "using the newest intact checkpoint instead" in err


def test_recover_removes_a_temporary_folder_left_between_the_two_renames(tmp_path):
    ckdir = tmp_path / "checkpoints"
    (ckdir / ".old-best-99999").mkdir(parents=True)  # a kill after moving best/ aside...
    (ckdir / ".tmp-best-99999").mkdir()  # ...before moving the new one in
    ckpt.recover(ckdir)
    assert sorted(p.name for p in ckdir.iterdir()) == ["best"]
