"""Shared fixtures: an isolated cache folder and a small text corpus."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
