"""Shared fixtures: run every test in its own working directory, offline, on the CPU."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# one intra-op thread per process (inherited by the runs the tests start): the tests' networks are tiny, and on a
# busy 2-core machine two OpenMP threads per process spin against each other and the loader workers (a digits
# run took 8.5 min instead of 35 s); set OMP_NUM_THREADS to override
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Relative paths of recipes (``runs/...``) land in the test's temporary directory."""
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture(autouse=True)
def _denormal_mode_kept():
    """The CLI turns on the flush of subnormal floats for its process: tests in this one get the mode they had."""
    from callbacks.denormals import denormal_mode

    with denormal_mode():
        yield


@pytest.fixture
def zoo_cli():
    """Run the real ``zoo`` entry point in-process: ``zoo_cli("fit", "--recipe", "digits", ...)``."""
    from recipes.cli import main

    def run(*args: str) -> int:
        return main([str(a) for a in args])

    return run


FAST_TRAINER = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")


@pytest.fixture
def read_only_folder():
    """A folder nobody may write to (in /tmp, so that another user can reach it)."""
    work = Path(tempfile.mkdtemp(prefix="zoo-ro-"))
    work.chmod(0o555)
    yield work
    work.chmod(0o755)
    shutil.rmtree(work)


@pytest.fixture
def unprivileged() -> tuple[str, ...]:
    """The command prefix that runs a process without root's right to write anywhere (``()`` for a user)."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    caps = "-dac_override,-dac_read_search"
    return ("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}")
