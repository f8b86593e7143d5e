"""Two-process DDP through the real ``zoo`` command with the recipe's own terminal output (progress bar, model
summary, results table, logger): ``fit`` on a pseudo-terminal as a user's shell runs it, then ``validate``,
``test`` and ``predict`` from its checkpoint. Every rank but 0 has a disabled progress bar; a hook that read
the loop's totals there crashed every DDP run in its sanity check. On a split that two processes cannot share
evenly, ``test`` scores each image once (the metrics of one process) and ``predict`` writes each once, in order;
two jobs started together each get a rendezvous port of their own."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import socket
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


ODD = ("--data.init_args.test_fraction", "0.055")  # a test split of 99 images: not a multiple of 2 processes


def table_value(out: str, key: str) -> str:
    found = re.search(rf"{re.escape(key)}\s*│\s*([0-9.e-]+)", out)
    assert found, out[-3000:]
    return found.group(1)


def test_test_on_two_processes_counts_each_image_once(fitted):
    cwd, run_dir, _ = fitted
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    two = run(cwd, "test", "--recipe", "digits", *DDP, *ODD, "--ckpt_path", ckpt)
    one = run(cwd, "test", "--recipe", "digits", "--trainer.accelerator", "cpu", *ODD, "--ckpt_path", ckpt)
    # Lightning's sampler padded the split to 100 images (one scored twice) and warned about it
    assert table_value(two, "test/top1") == table_value(one, "test/top1")
    assert round(float(table_value(two, "test/top1")) * 99, 4).is_integer()
    assert float(table_value(two, "test/loss")) == pytest.approx(
        float(table_value(one, "test/loss")), rel=1e-5
    )
    assert "DistributedSampler" not in two


def test_predict_on_two_processes_writes_each_image_once_in_order(fitted, tmp_path):
    cwd, run_dir, _ = fitted
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    written = {}
    for name, devices in (("two", DDP), ("one", ("--trainer.accelerator", "cpu"))):
        out = tmp_path / f"{name}.csv"
        run(
            cwd,
            "predict",
            "--recipe",
            "digits",
            *devices,
            *ODD,
            "--ckpt_path",
            ckpt,
            "--predictions.output",
            out,
        )
        with out.open() as f:
            written[name] = list(csv.DictReader(f))
    two, one = written["two"], written["one"]
    assert len(two) == 99 and len({r["path"] for r in two}) == 99
    assert [(r["path"], r["class_1"]) for r in two] == [(r["path"], r["class_1"]) for r in one]
    assert [float(r["prob_1"]) for r in two] == pytest.approx([float(r["prob_1"]) for r in one], abs=2e-6)


def test_two_ddp_jobs_started_together_never_share_a_rendezvous_port(fitted, tmp_path):
    """Lightning's port probe (bind port 0, close, use the port later) can hand two jobs one port; its own
    ``STANDALONE_PORT`` makes the probe do so here, every time."""
    cwd, run_dir, _ = fitted
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**ENV, "STANDALONE_PORT": str(port)}
    jobs = []
    for i in range(2):
        folder = tmp_path / f"job{i}"
        folder.mkdir()
        log = (folder / "out.txt").open("w")
        command = [ZOO, "validate", "--recipe", "digits", *DDP, "--ckpt_path", ckpt]
        jobs.append(
            (
                subprocess.Popen(
                    command, cwd=folder, env=env, stdout=log, stderr=log, start_new_session=True
                ),
                log,
            )
        )
    try:
        for proc, log in jobs:
            proc.wait(timeout=600)
            log.close()
    finally:
        for proc, _ in jobs:  # a rank left waiting on another job's rendezvous
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    for i, (proc, _) in enumerate(jobs):
        out = (tmp_path / f"job{i}" / "out.txt").read_text()
        assert_clean_exit(
            proc.returncode, out
        )  # one failed with EADDRINUSE, or joined the other's rendezvous
        assert re.search(r"val/top1\s*│\s*0\.\d+", out), out[-3000:]


FAIL_ON_RANK_ZERO = """
from lightning.pytorch.callbacks import Callback


class FailOnRankZero(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            raise RuntimeError("rank zero failed here")
"""


def test_a_failure_of_rank_zero_ends_the_other_rank_too(tmp_path):
    """Rank 1 would wait in its next collective for 30 minutes, holding the terminal (or these pipes)."""
    (tmp_path / "fail_on_rank_zero.py").write_text(FAIL_ON_RANK_ZERO)
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    command = [ZOO, "fit", "--recipe", "digits", *DDP, "--trainer.max_epochs", "2"]
    command += [
        "--trainer.callbacks+=fail_on_rank_zero.FailOnRankZero",
        "--trainer.enable_progress_bar",
        "false",
    ]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=180)  # both ranks gone: the pipe closed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "rank zero failed here" in out, out[-3000:]


def test_a_ddp_recipe_only_built_binds_no_port_and_sets_no_master_port(monkeypatch):
    """``zoo schedule`` and the tests build recipes without running them: a port bound and ``MASTER_PORT`` set
    then would send every later DDP run of this process's children to a rendezvous no one serves."""
    from recipes.lightning_cli import build_recipe, expand_recipe
    from recipes.rendezvous import _held

    monkeypatch.delenv("MASTER_PORT", raising=False)
    held = dict(_held)
    cli = build_recipe(expand_recipe(["--recipe", "digits", *DDP]))
    assert cli.trainer.world_size == 2
    assert "MASTER_PORT" not in os.environ and _held == held


def test_the_ranks_a_failed_launcher_started_end_within_the_grace_time():
    """A rank blocked where its dead rank 0 cannot wake it (a store it keeps retrying) is killed, not waited for."""
    import time
    from types import SimpleNamespace

    from recipes import rendezvous

    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    rendezvous._launchers.append(SimpleNamespace(procs=[quick, stuck]))
    start = time.monotonic()
    rendezvous.stop_started_ranks(grace=2.0)
    assert time.monotonic() - start < 30
    assert quick.returncode == 0 and stuck.returncode == -signal.SIGKILL and not rendezvous._launchers
