"""Fault injection on real ``zoo fit`` processes: SIGKILL at a random step, or in the middle of writing a checkpoint,
then ``--ckpt_path last``; the resumed run must end with the weights of a run never stopped, weight by weight.

The kills come from ``tests/faults.py`` callbacks inside the run (SIGKILL: no handler, no flush, no clean-up).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow

ZOO = str(Path(sys.executable).with_name("zoo"))
TESTS = Path(__file__).parent
QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
# digits: 1,078 training images, 17 steps of 64 per epoch, dropout, random shifts, warmup + cosine
DIGITS = ("--recipe", "digits", "--trainer.max_epochs", "2", "--test_after_fit", "false", *QUIET)
EVERY = 4  # last.ckpt every EVERY optimizer steps (and at each epoch's end)


def zoo_fit(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([ZOO, "fit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def start(cwd: Path, *args: str) -> subprocess.Popen:
    """The reference run, in the background while the faulty one runs."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [ZOO, "fit", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(run: subprocess.Popen) -> None:
    out, _ = run.communicate(timeout=900)
    assert run.returncode == 0, out[-3000:]


def last(cwd: Path, recipe: str, version: int) -> dict:
    return torch.load(
        cwd / "runs" / recipe / f"version_{version}" / "checkpoints" / "last.ckpt", weights_only=True
    )


def killed(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == -9, f"expected a SIGKILL, got exit {done.returncode}:\n{done.stderr[-3000:]}"


def resumed(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    done = zoo_fit(cwd, *args, "--ckpt_path", "last")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--ckpt_path last: resuming from" in done.stdout + done.stderr
    return done


def assert_same_weights(got: dict, want: dict, why: str) -> None:
    assert (got["global_step"], got["epoch"]) == (want["global_step"], want["epoch"])
    assert got["state_dict"].keys() == want["state_dict"].keys()
    worst = max(
        (got["state_dict"][k].double() - want["state_dict"][k].double()).abs().max().item()
        for k in want["state_dict"]
    )
    assert worst <= 1e-6, f"max |Δw| = {worst:.3g} {why}"
    got_curve, want_curve = loss_curve(got), loss_curve(want)  # the diagnosis reads the same curve
    assert got_curve["initial_loss"] == pytest.approx(want_curve["initial_loss"], rel=1e-5), why
    for curve in (
        "train_loss",
        "val_loss",
        "val_acc",
    ):  # every epoch validated once, as in the run not stopped
        assert got_curve[curve] == pytest.approx(want_curve[curve], rel=1e-4), f"{curve} {why}"
    assert best_score(got) == pytest.approx(best_score(want), rel=1e-4), why


def best_score(checkpoint: dict) -> float | None:
    state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))
    return None if state["best_model_score"] is None else float(state["best_model_score"])


def loss_curve(checkpoint: dict) -> dict:
    return next(v for k, v in checkpoint["callbacks"].items() if k.startswith("LossCurveDiagnostics"))[
        "history"
    ]


@pytest.fixture(scope="module")
def digits_reference(tmp_path_factory):
    """last.ckpt of a digits run that was never stopped (no loader workers)."""
    cwd = tmp_path_factory.mktemp("straight")
    finish(start(cwd, *DIGITS, "--last_checkpoint.every_n_train_steps", str(EVERY)))
    return last(cwd, "digits", 0)


@pytest.mark.parametrize(("workers", "signal"), [(0, "SIGKILL"), (2, "SIGKILL"), (0, "SIGTERM")])
def test_digits_stopped_at_a_random_step_resumes_to_the_same_weights(
    tmp_path, digits_reference, workers, signal
):
    """With 2 loader workers and the random shifts on, the result is also that of the run without workers.
    SIGTERM (``scancel``, a pre-emption) stops after the step in progress and saves last.ckpt there."""
    step = random.Random().randint(EVERY + 1, 32)  # of 34: a last.ckpt before the stop, a step after it
    args = (*DIGITS, "--last_checkpoint.every_n_train_steps", str(EVERY), "--data.num_workers", str(workers))
    fault = ("--trainer.callbacks+=faults.KillAt", "--trainer.callbacks.step", str(step))
    done = zoo_fit(tmp_path, *args, *fault, "--trainer.callbacks.signal", signal)
    saved = last(tmp_path, "digits", 0)
    if signal == "SIGKILL":
        killed(done)
        assert 0 < saved["global_step"] <= step  # written at or before the killed step
    else:
        assert done.returncode != 0, done.stderr[-3000:]
        assert saved["global_step"] == step + 1  # the step under way when the signal came
    resumed(tmp_path, *args)
    assert_same_weights(last(tmp_path, "digits", 1), digits_reference, f"({signal} before step {step})")


@pytest.mark.parametrize(
    ("step", "where"),
    [(16, "batch"), (17, "validation"), (33, "batch")],
    ids=["last step", "validation", "end"],
)
def test_a_run_stopped_before_an_epochs_validation_validates_that_epoch_when_resumed(
    tmp_path, digits_reference, step, where
):
    """SIGTERM in an epoch's last step or in its validation: Lightning resumes at the epoch's end and would skip
    the validation (no score for that epoch; stopped in the final epoch, the resumed run would say that nothing
    was trained and exit 4). The resumed run validates that epoch, once, and ends as the run never stopped."""
    args = (*DIGITS, "--last_checkpoint.every_n_train_steps", str(EVERY))
    fault = ("--trainer.callbacks+=faults.KillAt", "--trainer.callbacks.step", str(step))
    done = zoo_fit(
        tmp_path, *args, *fault, "--trainer.callbacks.where", where, "--trainer.callbacks.signal", "SIGTERM"
    )
    assert done.returncode == 143, done.stderr[-3000:]
    assert last(tmp_path, "digits", 0)["global_step"] == step + (where == "batch")  # the step under way
    out = resumed(tmp_path, *args)
    assert "the run was stopped before its validation" in out.stdout + out.stderr
    assert_same_weights(
        last(tmp_path, "digits", 1), digits_reference, f"(SIGTERM in the {where} of step {step})"
    )


def test_a_kill_during_a_checkpoint_save_keeps_the_previous_last_ckpt(tmp_path, digits_reference):
    save_at = 3 * EVERY  # the process dies while serialising the last.ckpt of step 12
    args = (*DIGITS, "--last_checkpoint.every_n_train_steps", str(EVERY))
    folder = tmp_path / "runs" / "digits" / "version_0" / "checkpoints"
    done = zoo_fit(
        tmp_path,
        *args,
        "--trainer.callbacks+=faults.KillDuringSave",
        "--trainer.callbacks.step",
        str(save_at),
    )
    killed(done)
    torn = list(folder.glob(".last.ckpt.*.tmp"))
    assert len(torn) == 1  # the cut-off write went to a temporary file ...
    previous = torch.load(
        folder / "last.ckpt", weights_only=True
    )  # ... and last.ckpt is the whole previous one
    assert previous["global_step"] == 2 * EVERY
    resumed(tmp_path, *args)
    assert not torn[0].exists()  # the resumed run removed the dead process's temporary file
    assert_same_weights(
        last(tmp_path, "digits", 1), digits_reference, f"(killed while saving step {save_at})"
    )


def make_folder(root: Path, classes: int = 3, per_class: int = 14, size: int = 20) -> Path:
    """Real PNG files, one folder per class, noisy images in the class's colour."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        colour = np.roll([210, 40, 40], c)
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 40, (size, size, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i:02d}.png")
    return root


def test_image_folder_with_workers_killed_at_a_random_step_resumes_to_the_same_weights(tmp_path):
    """The folder recipe as shipped (2 loader workers, random resized crops, flips, dropout) on PNG files."""
    root = make_folder(tmp_path / "images")
    args = (
        "--recipe", "folder", "--data.root", str(root), "--data.image_size", "16", "--data.batch_size", "4",
        "--model.model_kwargs.widths", "[8,16]", "--model.model_kwargs.depth", "1", "--trainer.max_epochs", "3",
        "--test_after_fit", "false", "--last_checkpoint.every_n_train_steps", "3", *QUIET,
    )  # fmt: skip
    straight = start(tmp_path / "straight", *args)
    step = random.Random().randint(4, 20)  # 3 epochs of 7 steps
    faulty = tmp_path / "faulty"
    killed(
        zoo_fit(faulty, *args, "--trainer.callbacks+=faults.KillAt", "--trainer.callbacks.step", str(step))
    )
    resumed(faulty, *args)
    finish(straight)
    assert_same_weights(
        last(faulty, "folder", 1), last(tmp_path / "straight", "folder", 0), f"(killed before step {step})"
    )
