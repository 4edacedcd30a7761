"""Shared fixtures: an isolated cache folder and a small text corpus."""

import os

import pytest
import torch

# Under pytest-xdist each worker gets its own share of the cores, pinned: `set_threads(0)` (what a run
# does when train.threads is 0) then sees only those, and so do the subprocesses a test starts. Without
# the pinning every worker's runs took all the cores, and two workers' threads fighting over two cores
# made the suite several times slower than the same tests one at a time.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _workers > 1 and hasattr(os, "sched_setaffinity"):
    _cpus = sorted(os.sched_getaffinity(0))
    _share = len(_cpus) // _workers
    _index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0) % _workers
    if _share >= 1:
        os.sched_setaffinity(0, _cpus[_index * _share:(_index + 1) * _share])
# Two threads at most per test process.
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _workers)))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Token and tokenizer caches go to a temporary folder, never the user's."""
    old = os.environ.get("SCRATCHLM_CACHE")
    os.environ["SCRATCHLM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("SCRATCHLM_CACHE", None)
    else:
        os.environ["SCRATCHLM_CACHE"] = old


SMALL_TEXT = (
    "FIRST CITIZEN:\nBefore we proceed any further, hear me speak.\n\n"
    "ALL:\nSpeak, speak.\n\n"
    "FIRST CITIZEN:\nYou are all resolved rather to die than to famish?\n\n"
    "ALL:\nResolved. resolved.\n\n"
) * 40


@pytest.fixture
def small_corpus(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(SMALL_TEXT, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_end_of_training_figures(request, monkeypatch):
    """`scratchlm train` draws ~20 figures when it ends (seconds each on a small CPU). Tests of
    other things skip that drawing; the viz and report tests, which check the figures, keep it."""
    if request.module.__name__.split(".")[-1].startswith(("test_viz", "test_report")):
        return
    from scratchlm.viz import figures

    monkeypatch.setattr(figures, "render_all", lambda *args, **kwargs: [])
