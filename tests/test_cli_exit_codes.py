"""Exit codes a job script can trust, through the real ``zoo`` command in a subprocess: SIGTERM and SIGINT save
``last.ckpt`` at the signal, print the resume command and exit 143 / 130; SIGUSR1 under SLURM keeps Lightning's
save-and-requeue; a diverged run exits 3 with no diverged epoch kept as best; a run that trains nothing exits 4."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER

ZOO = str(Path(sys.executable).with_name("zoo"))
LONG = ("--trainer.max_epochs", "1000", "--test_after_fit", "false", *FAST_TRAINER)
RUN = Path("runs/digits/version_0")


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [ZOO, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for(paths, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until every path in ``paths`` (a callable giving a list of paths, or one glob) exists."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"zoo ended early with {proc.returncode}:\n{err[-3000:]}")
        if paths():
            return
        time.sleep(0.2)
    proc.kill()
    pytest.fail("timed out waiting for the run to start")


def stopped_at(err: str, name: str) -> tuple[int, int, Path]:
    found = re.search(rf"stopped by {name} at epoch (\d+), step (\d+); saved (\S+)", err)
    assert found, err[-3000:]
    return int(found.group(1)), int(found.group(2)), Path(found.group(3))


def sigterm_run() -> tuple[int, int, Path, str]:
    """A digits run stopped by SIGTERM after its first epoch: (epoch, step, saved checkpoint, stderr)."""
    # no epoch-end last.ckpt: the only last.ckpt is the one written at the signal
    proc = start("fit", "--recipe", "digits", *LONG, "--checkpoint.save_last", "false")
    wait_for(lambda: list((RUN / "checkpoints").glob("best-*.ckpt")), proc)  # an epoch is done
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    return (*stopped_at(err, "SIGTERM"), err)


def test_sigterm_saves_last_ckpt_at_the_signal_and_exits_143():
    epoch, step, saved, err = sigterm_run()
    assert saved == RUN / "checkpoints" / "last.ckpt"
    ckpt = torch.load(saved, weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == step >= 17 and ckpt["epoch"] == epoch  # the state at the signal
    command = err.strip().splitlines()[-1]
    assert command.startswith("resume with: zoo fit --recipe digits") and command.endswith("--ckpt_path last")
    assert "Traceback" not in err
    assert "weights_only" not in err  # no "`weights_only` was not set" line from Lightning


@pytest.mark.slow
def test_the_printed_resume_command_continues_the_stopped_run():
    epoch, step, saved, err = sigterm_run()
    command = err.strip().splitlines()[-1].removeprefix("resume with: ")
    argv = [*shlex.split(command)[1:], "--trainer.max_epochs", str(epoch + 2)]  # to the end of the next epoch
    resumed = subprocess.run([ZOO, *argv], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"--ckpt_path last: resuming from {saved}" in resumed.stderr
    (best,) = Path("runs/digits/version_1/checkpoints").glob(f"best-epoch{epoch + 1:03d}-*.ckpt")
    assert torch.load(best, weights_only=True)["global_step"] > step


@pytest.mark.slow
def test_ctrl_c_stops_after_the_step_saves_and_exits_130():
    proc = start("fit", "--recipe", "digits", *LONG)
    wait_for(lambda: list((RUN / "checkpoints").glob("best-*.ckpt")), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Ctrl+C: stopping after this step and saving last.ckpt" in err
    _, step, saved = stopped_at(err, "SIGINT")
    assert torch.load(saved, weights_only=True)["global_step"] == step
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


SCONTROL = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/scontrol.calls"
"""


@pytest.mark.slow
def test_sigusr1_under_slurm_keeps_lightnings_save_and_requeue(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "zoo",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NODELIST": "localhost",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    proc = start("fit", "--recipe", "digits", *LONG, env=slurm)
    wait_for(lambda: list((RUN / "checkpoints").glob("best-*.ckpt")), proc)
    proc.send_signal(signal.SIGUSR1)
    hpc = Path("runs/digits/hpc_ckpt_1.ckpt")  # Lightning's save, in default_root_dir
    wait_for(lambda: hpc.is_file() and (bin_dir / "scontrol.calls").is_file(), proc)
    assert proc.poll() is None  # the run goes on until SLURM stops it
    proc.send_signal(signal.SIGTERM)  # as SLURM does when it requeues
    _, err = proc.communicate(timeout=120)
    assert (bin_dir / "scontrol.calls").read_text().split() == ["requeue", "4242"]
    assert torch.load(hpc, weights_only=True)["global_step"] > 0
    assert proc.returncode == 143, err[-3000:]


def test_a_diverged_run_exits_3_and_keeps_no_diverged_epoch_as_best(zoo_cli, capsys):
    args = ("--model.optimizer.lr", "1000", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "5")
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:  # the weights reach ~1e8 in the first epoch, then NaN
        zoo_cli("fit", "--recipe", "digits", *args, "--trainer.limit_val_batches", "2", *FAST_TRAINER)
    err = capsys.readouterr().err
    assert done.value.code == 3
    assert err.strip().splitlines()[-1].startswith("error: the run diverged: ")
    assert "no checkpoint was kept as best" in err
    checkpoints = RUN / "checkpoints"
    assert not list(checkpoints.glob("best-*.ckpt"))
    assert (checkpoints / "last.ckpt").is_file()  # the run's state is kept, as last


def test_best_checkpoint_refuses_exploded_or_non_finite_weights_and_scores():
    from callbacks.best_checkpoint import unusable_weights

    net = torch.nn.Linear(3, 2)
    assert unusable_weights(net, 1e6) is None
    with torch.no_grad():
        net.weight[0, 0] = 2e33  # what lr 1000 produced
    assert "largest weight is 2e+33 (> max_abs_weight 1e+06)" in unusable_weights(net, 1e6)
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    assert unusable_weights(net, 1e6) == "its weights hold NaN or inf"


def test_a_run_that_trains_nothing_says_so_and_exits_4(zoo_cli, capsys):
    tiny = (
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "2",
    )
    assert zoo_cli("fit", "--recipe", "digits", *tiny, "--test_after_fit", "false", *FAST_TRAINER) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:  # resumed at its end: max_epochs already reached
        zoo_cli("fit", "--recipe", "digits", *tiny, "--ckpt_path", "last", *FAST_TRAINER)
    assert done.value.code == 4
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: nothing was trained: the run ended at epoch 1, step 2")
