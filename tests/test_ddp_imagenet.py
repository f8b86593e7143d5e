"""The ImageNet recipe under DDP: two CPU processes (gloo) on a tiny generated ImageNet-layout folder, then a
resumed run from its ``last.ckpt``. In a subprocess: Lightning's DDP launcher re-runs the command line."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAINER
from PIL import Image

ZOO = str(Path(sys.executable).with_name("zoo"))
RECIPE = "imagenet-resnet50-step"
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 8, 2
DEVICES, BATCH = 2, 4
GLOBAL_BATCH = DEVICES * BATCH  # 8 images per optimizer step
STEPS_PER_EPOCH = CLASSES * TRAIN_PER_CLASS // GLOBAL_BATCH  # 4
SCALED_LR = 0.1 * GLOBAL_BATCH / 256  # the recipe's lr 0.1 per 256 images, linear scaling rule
WARMUP_EPOCHS = 5


def write_imagenet_folder(root: Path) -> Path:
    """``train/CLASS/*.JPEG`` and ``val/CLASS/*.JPEG``: 24×24 JPEGs whose colour tells the class."""
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c in range(CLASSES):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.full((24, 24, 3), 40 + 50 * c, np.int64) + rng.integers(-20, 20, (24, 24, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"img_{i}.JPEG")
    return root


def fit(cwd: Path, data: Path, *extra: str, launcher: tuple[str, ...] = (ZOO,)) -> str:
    args = [
        *("fit", "--recipe", RECIPE, "--data.root", str(data), "--data.image_size", "16"),
        *("--data.batch_size", str(BATCH), "--data.num_workers", "0"),
        *("--trainer.accelerator", "cpu", "--trainer.devices", str(DEVICES), "--trainer.strategy", "ddp"),
        *("--trainer.precision", "32-true", "--model.channels_last", "false"),  # GPU switches off on CPU
        *("--trainer.log_every_n_steps", "1", "--last_checkpoint.every_n_train_steps", "2"),
        # stop after each epoch while the schedule keeps the recipe's 90 epochs
        *("--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=train/loss"),
        *("--trainer.callbacks.stopping_threshold=1e30", "--trainer.callbacks.check_on_train_epoch_end=true"),
        *FAST_TRAINER,
        *extra,
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    return out


def logged(run: Path) -> dict[int, dict[str, float]]:
    """step -> {metric: value} of a run's metrics.csv."""
    rows: dict[int, dict[str, float]] = {}
    with (run / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if v and k != "step"}
            rows.setdefault(int(row["step"]), {}).update(values)
    return rows


def warmup_lr(step: int) -> float:
    """lr(step) = scaled lr × t/5 with t = step / steps per epoch (the recipe's warmup from 0)."""
    return SCALED_LR * min(1.0, step / STEPS_PER_EPOCH / WARMUP_EPOCHS)


def check_lrs(rows: dict[int, dict[str, float]], steps: range) -> None:
    for step in steps:
        lrs = {k: v for k, v in rows[step].items() if k.startswith("lr-") and not k.endswith("momentum")}
        assert lrs, f"no lr logged at step {step}"
        for key, value in lrs.items():
            assert value == pytest.approx(warmup_lr(step), rel=1e-6), (step, key)


@pytest.mark.slow
def test_two_process_ddp_run_logs_once_and_resumes_from_its_step(tmp_path):
    data = write_imagenet_folder(tmp_path / "imagenet")
    runs = tmp_path / "runs" / RECIPE

    first = fit(tmp_path, data)
    # rank 0 alone prints: the lr scaled for the global batch of 2 processes × 4 images, once
    rule = f"Linear scaling rule: lr 0.1 @ 256 → {SCALED_LR:g} @ {GLOBAL_BATCH}"
    assert first.count(rule) == 1, first[-3000:]
    assert first.count("Linear scaling rule") == 1
    assert first.count("trainer.sync_batchnorm: true → false") == 1  # the CPU fallback, said once
    assert first.count("Results") == 1
    # one set of logs: a single run folder with one metrics file
    (run0,) = sorted(runs.glob("version_*"))
    assert sorted(p.name for p in run0.rglob("metrics.csv")) == ["metrics.csv"]
    rows = logged(run0)
    check_lrs(rows, range(STEPS_PER_EPOCH))
    assert sorted(s for s, r in rows.items() if "train/loss" in r) == list(range(STEPS_PER_EPOCH))
    saved = torch.load(run0 / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == STEPS_PER_EPOCH and saved["epoch"] == 0
    assert [p.name for p in (run0 / "checkpoints").glob("last*")] == ["last.ckpt"]

    second = fit(tmp_path, data, "--ckpt_path", "last")
    assert second.count(f"--ckpt_path last: resuming from {Path('runs') / RECIPE / run0.name}") == 1
    assert second.count("Linear scaling rule") == 1
    assert [p.name for p in sorted(runs.glob("version_*"))] == [run0.name, "version_1"]
    run1 = runs / "version_1"
    resumed = logged(run1)
    train_steps = sorted(s for s, r in resumed.items() if "train/loss" in r)
    # the resumed run continues from the saved step, on the warmup curve where it was left
    assert train_steps == list(range(STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)), train_steps
    check_lrs(resumed, range(STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH))
    final = torch.load(run1 / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 2 * STEPS_PER_EPOCH and final["epoch"] == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_launch_as_documented_for_clusters_without_slurm(tmp_path):
    data = write_imagenet_folder(tmp_path / "imagenet")
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    launcher = (torchrun, "--nnodes", "1", "--nproc-per-node", str(DEVICES), "--node-rank", "0")
    launcher += ("--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "recipes.cli")
    out = fit(tmp_path, data, "--trainer.num_nodes", "1", launcher=launcher)
    # torchrun started both processes (Lightning launched none): one scaling line, one run folder
    assert out.count(f"Linear scaling rule: lr 0.1 @ 256 → {SCALED_LR:g} @ {GLOBAL_BATCH}") == 1, out[-3000:]
    (run,) = (tmp_path / "runs" / RECIPE).glob("version_*")
    check_lrs(logged(run), range(STEPS_PER_EPOCH))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STEPS_PER_EPOCH
