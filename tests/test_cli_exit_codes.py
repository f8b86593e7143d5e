"""Exit codes a job script can trust, through the real ``zoo`` command in a subprocess: SIGTERM and SIGINT save
``last.ckpt`` at the signal, print the resume command and exit 143 / 130, however fast Ctrl+C is pressed twice;
SIGUSR1 under SLURM keeps Lightning's save-and-requeue; a diverged run exits 3 with no diverged epoch kept as
best; a run that trains nothing exits 4; a write the machine refuses (a file-size limit) exits 5 and keeps the
earlier checkpoint."""

from __future__ import annotations

import os
import random
import re
import resource
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
TESTS = Path(__file__).parent
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


def with_faults() -> dict:
    """The environment of a run that loads ``tests/faults.py`` callbacks."""
    return {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def run_with_faults(*args: str) -> subprocess.CompletedProcess:
    """``zoo fit --recipe digits ARGS`` to its end, able to load ``tests/faults.py`` callbacks."""
    command = [ZOO, "fit", "--recipe", "digits", *args]
    env = {**os.environ, **with_faults()}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


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


def test_ctrl_c_twice_while_the_stop_is_being_saved_still_saves_and_exits_130():
    fault = ("--trainer.callbacks+=faults.CtrlC", "--trainer.callbacks.step", "5")
    done = run_with_faults(*LONG, *fault)
    assert done.returncode == 130, done.stderr[-3000:]  # was 1, or 130 with nothing saved
    epoch, step, saved = stopped_at(done.stderr, "SIGINT")
    assert (epoch, step) == (0, 6) and saved == RUN / "checkpoints" / "last.ckpt"
    ckpt = torch.load(saved, weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["optimizer_states"] and ckpt["loops"]  # a state to resume from
    assert "Traceback" not in done.stderr and "Detected KeyboardInterrupt" not in done.stderr


def test_ctrl_c_again_after_the_grace_stops_at_once_and_exits_130():
    fault = (
        "--trainer.callbacks+=faults.CtrlC",
        "--trainer.callbacks.step",
        "20",
        "--trainer.callbacks.second",
    )
    done = run_with_faults(*LONG, *fault, "at_once")
    assert done.returncode == 130, done.stderr[-3000:]  # Lightning's own handling exits 1
    kept = RUN / "checkpoints" / "last.ckpt"
    lines = done.stderr.strip().splitlines()
    assert (
        lines[-2]
        == f"stopped by SIGINT at epoch 1, step 20; nothing saved at the signal: {kept} is as it was"
    )
    assert lines[-1].startswith("resume with: zoo fit --recipe digits")
    assert torch.load(kept, weights_only=True)["global_step"] == 17  # the end of epoch 0, whole
    assert "Traceback" not in done.stderr


def test_ctrl_c_as_training_ends_skips_the_test_after_fit_and_exits_130():
    tiny = (
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
    )
    done = run_with_faults(*tiny, *FAST_TRAINER, "--trainer.callbacks+=faults.CtrlCAtTheEnd")
    assert done.returncode == 130, done.stderr[-3000:]  # was 0, after testing as if nothing was pressed
    assert stopped_at(done.stderr, "SIGINT") == (1, 3, RUN / "checkpoints" / "last.ckpt")  # after epoch 0
    assert "best checkpoint" in done.stdout and "test/top1" not in done.stdout  # results, and no test


@pytest.mark.slow
def test_two_ctrl_c_a_few_ms_apart_always_save_a_resumable_checkpoint_and_exit_130():
    rng = random.Random(0)
    for attempt in range(5):
        run = Path(f"runs/digits/version_{2 * attempt}")
        proc = start("fit", "--recipe", "digits", *LONG, "--trainer.log_every_n_steps", "1")
        wait_for(lambda run=run: (run / "metrics.csv").is_file(), proc)  # training has started
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGINT)
        time.sleep(rng.uniform(0.001, 0.02))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-3000:]
        _, step, saved = stopped_at(err, "SIGINT")
        assert saved == run / "checkpoints" / "last.ckpt"
        resumed = subprocess.run(  # the checkpoint resumes: one more epoch from it
            [ZOO, "fit", "--recipe", "digits", *FAST_TRAINER, "--test_after_fit", "false", "--ckpt_path", str(saved),
             "--trainer.max_epochs", str(torch.load(saved, weights_only=True)["epoch"] + 2)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_a_file_size_limit_mid_run_exits_5_naming_the_file_and_keeps_the_earlier_last_ckpt(zoo_cli):
    args = ("--recipe", "digits", "--checkpoint.dirpath", "ckpts", "--test_after_fit", "false", *FAST_TRAINER)
    args = (*args, "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2")
    assert zoo_cli("fit", *args, "--trainer.max_epochs", "1") == 0
    last = Path("ckpts/last.ckpt")
    before = last.read_bytes()
    limit = 150_000  # bytes: a digits checkpoint is ~570 kB, the logs and configs are a few kB

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # `ulimit -f 150` in a shell

    done = subprocess.run(
        [ZOO, "fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", str(last)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited,
    )
    assert done.returncode == 5, done.stderr[-3000:]  # was 1, with a traceback and "a bug in lightning-zoo"
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: cannot save checkpoint '{Path('ckpts').resolve()}/best-epoch001-val_loss="
    )
    assert "file too large for the file-size limit (`ulimit -f`) or the file system (EFBIG)" in line
    assert "Traceback" not in done.stderr
    assert last.read_bytes() == before and not list(Path("ckpts").glob(".*.tmp"))


def test_a_diverged_runs_last_ckpt_is_marked_and_refused_by_fit_and_predict(zoo_cli, capsys):
    args = ("--model.optimizer.lr", "1000", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "5")
    with pytest.raises(SystemExit):  # exit 3: diverged
        zoo_cli("fit", "--recipe", "digits", *args, "--trainer.limit_val_batches", "2", *FAST_TRAINER)
    last = RUN / "checkpoints" / "last.ckpt"
    why = torch.load(last, weights_only=True)["diverged"]
    assert why.startswith("its largest weight is") or why.endswith(
        "non-finite losses in a row stopped training"
    )
    said = f"{last} was written by a run that diverged ({why})"
    for command in ("predict", "fit"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:  # accepted without a word before
            zoo_cli(command, "--recipe", "digits", "--ckpt_path", "last", *FAST_TRAINER)
        assert done.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"error: {said}; train again with a lower --model.optimizer.lr"  # no best checkpoint to offer
        )
    with pytest.warns(UserWarning, match=re.escape(f"{said}: its scores are those of diverged weights")):
        assert (
            zoo_cli("test", "--recipe", "digits", "--ckpt_path", "last", *FAST_TRAINER) == 0
        )  # scored, said
