"""Shared fixtures: run every test in its own working directory, offline, on the CPU."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Relative paths of recipes (``runs/...``) land in the test's temporary directory."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def zoo_cli():
    """Run the real ``zoo`` entry point in-process: ``zoo_cli("fit", "--recipe", "digits", ...)``."""
    from recipes.cli import main

    def run(*args: str) -> int:
        return main([str(a) for a in args])

    return run


FAST_TRAINER = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
