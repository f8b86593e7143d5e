"""Two-process DDP through the real ``zoo`` command with the recipe's own terminal output (progress bar, model
summary, results table, logger): ``fit`` on a pseudo-terminal as a user's shell runs it, then ``validate``,
``test`` and ``predict`` from its checkpoint. Every rank but 0 has a disabled progress bar; a hook that read
the loop's totals there crashed every DDP run in its sanity check."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from terminal import run_in_terminal

ZOO = str(Path(sys.executable).with_name("zoo"))
DDP = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def clean(out: str) -> str:
    return ANSI.sub("", out)


def assert_clean_exit(code: int, out: str) -> None:
    assert code == 0, out[-4000:]
    assert "Traceback" not in out and "error:" not in out, out[-4000:]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path, str]:
    """``zoo fit --recipe digits`` on 2 CPU processes, 2 epochs, on a terminal: (cwd, run folder, output)."""
    cwd = tmp_path_factory.mktemp("ddp")
    code, out = run_in_terminal(
        [ZOO, "fit", "--recipe", "digits", *DDP, "--trainer.max_epochs", "2"], cwd, ENV
    )
    out = clean(out)
    assert_clean_exit(code, out)
    (run,) = (cwd / "runs" / "digits").glob("version_*")
    return cwd, run, out


def run(cwd: Path, *args: str) -> str:
    done = subprocess.run([ZOO, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert_clean_exit(done.returncode, out)
    return out


def test_fit_on_two_processes_with_the_default_progress_bar(fitted):
    cwd, run_dir, out = fitted
    assert "Epoch 1/1" in out  # the live bar was drawn, by rank 0
    assert out.count("Results") == 1 and out.count("test/top1") >= 1
    assert out.count("Loss curve:") == 1 and out.count("Report:") == 1  # rank 0 alone reports
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1
    assert (run_dir / "metrics.csv").is_file()


def test_validate_test_and_predict_on_two_processes(fitted):
    cwd, run_dir, _ = fitted
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    validated = run(cwd, "validate", "--recipe", "digits", *DDP, "--ckpt_path", ckpt)
    assert re.search(r"val/top1\s*│\s*0\.\d+", validated), validated[-3000:]
    tested = run(cwd, "test", "--recipe", "digits", *DDP, "--ckpt_path", ckpt)
    assert re.search(r"test/top1\s*│\s*0\.\d+", tested), tested[-3000:]
    predicted = run(cwd, "predict", "--recipe", "digits", *DDP, "--ckpt_path", ckpt)
    assert predicted.count("Wrote 360 predictions") == 1, predicted[-3000:]
    (written,) = (cwd / "runs" / "digits").glob("version_*/predictions.csv")
    with written.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 360 and len({r["path"] for r in rows}) == 360
