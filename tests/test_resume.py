"""Resuming: ``--ckpt_path last`` finds the newest last.ckpt of a recipe's runs, and ``LastCheckpoint`` writes one
every N optimizer steps."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback

from callbacks import LastCheckpoint, LinearWarmup
from recipes.resume import find_last_checkpoint, resolve_last, run_folders
from zoo import ImageClassifier
from zoo.data import SyntheticDataModule

SMALL = {"widths": [4], "depth": 1}


def touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def config(ckpt_path="last", dirpath=None) -> Namespace:
    logger = Namespace(
        class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir="runs", name="r")
    )
    trainer = Namespace(default_root_dir="runs/r", logger=logger)
    return Namespace(ckpt_path=ckpt_path, trainer=trainer, checkpoint=Namespace(dirpath=dirpath))


def test_last_is_the_newest_last_ckpt_of_the_recipes_runs():
    touch(Path("runs/r/version_0/checkpoints/last.ckpt"), 1000)
    newest = touch(Path("runs/r/version_1/checkpoints/last.ckpt"), 2000)
    touch(Path("runs/other/version_0/checkpoints/last.ckpt"), 3000)  # another recipe's run
    touch(Path("runs/r/version_1/checkpoints/best-epoch001.ckpt"), 4000)  # not a last checkpoint
    cfg = config()
    assert run_folders(cfg) == [Path("runs/r")]
    assert resolve_last(cfg, "fit") == newest
    assert cfg.ckpt_path == str(newest)


def test_wandb_runs_are_found_under_their_project():
    # Lightning's checkpoints of a W&B run live in save_dir/<project>/<run id>/checkpoints
    logger = Namespace(
        class_path="zoo.loggers.WandbLogger",
        init_args=Namespace(save_dir="runs", name="r", project="zoo-runs"),
    )
    cfg = Namespace(
        ckpt_path="last", trainer=Namespace(default_root_dir="runs/r", logger=logger), checkpoint=None
    )
    touch(Path("runs/other/version_0/checkpoints/last.ckpt"), 3000)  # another recipe's run
    wandb_last = touch(Path("runs/zoo-runs/abc123/checkpoints/last.ckpt"), 2000)
    assert Path("runs/zoo-runs") in run_folders(cfg)
    assert resolve_last(cfg, "fit") == wandb_last


def test_a_newer_slurm_hpc_checkpoint_wins():
    touch(Path("runs/r/version_0/checkpoints/last.ckpt"), 1000)
    hpc = touch(Path("runs/r/hpc_ckpt_2.ckpt"), 2000)  # Lightning's save on SIGUSR1, in default_root_dir
    assert find_last_checkpoint([Path("runs/r")]) == hpc


def test_checkpoint_dirpath_is_the_only_place_searched_when_set():
    touch(Path("runs/r/version_0/checkpoints/last.ckpt"), 2000)
    mine = touch(Path("elsewhere/last.ckpt"), 1000)
    cfg = config(dirpath="elsewhere")
    assert resolve_last(cfg, "fit") == mine


def test_no_checkpoint_yet_starts_fit_from_scratch_but_stops_evaluation():
    cfg = config()
    with pytest.warns(UserWarning, match=r"no last.ckpt under runs/r yet, so training starts from scratch"):
        assert resolve_last(cfg, "fit") is None
    assert cfg.ckpt_path is None
    with pytest.raises(SystemExit, match=r"--ckpt_path last: no last.ckpt under runs/r; give the checkpoint"):
        resolve_last(config(), "test")


def test_other_paths_are_left_alone():
    cfg = config(ckpt_path="my.ckpt")
    assert resolve_last(cfg, "fit") is None and cfg.ckpt_path == "my.ckpt"


def test_last_checkpoint_writes_every_n_steps_only():
    ckpts = Path("ckpts")
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=5,
        limit_val_batches=0,
        callbacks=[LastCheckpoint(every_n_train_steps=3, dirpath=str(ckpts))],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = ImageClassifier("convnet", num_classes=4, in_chans=1, model_kwargs={"widths": [4], "depth": 1})
    trainer.fit(model, SyntheticDataModule(num_classes=4, image_size=8, num_channels=1, batch_size=4))
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]
    # written at step 3, not at the end of the 5-step epoch
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 3
    with pytest.raises(ValueError, match="every_n_train_steps=-1"):
        LastCheckpoint(every_n_train_steps=-1)


STOP_AFTER_EPOCH = (
    "--trainer.callbacks+=EarlyStopping",
    "--trainer.callbacks.monitor=train/loss",
    "--trainer.callbacks.stopping_threshold=1e30",
    "--trainer.callbacks.check_on_train_epoch_end=true",
)


def test_fit_ckpt_path_last_continues_the_stopped_run(zoo_cli, tmp_path):
    run = (
        "fit",
        "--recipe",
        "digits",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--last_checkpoint.every_n_train_steps",
        "2",
    )
    quick = (
        *run,
        "--trainer.log_every_n_steps",
        "1",
        "--test_after_fit",
        "false",
        *STOP_AFTER_EPOCH,
        *FAST_TRAINER,
    )
    assert zoo_cli(*quick, "--ckpt_path", "last") == 0  # nothing to resume yet: starts from scratch
    assert zoo_cli(*quick, "--ckpt_path", "last") == 0
    runs = tmp_path / "runs" / "digits"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    with (runs / "version_1" / "metrics.csv").open() as f:
        steps = sorted({int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")})
    assert steps == [3, 4, 5]  # the second run starts at the first run's last step
    last = torch.load(runs / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["global_step"], last["epoch"]) == (6, 1)
    # one last.ckpt, written by the epoch-end and the step-wise checkpoints alike (no last-v1.ckpt)
    assert [p.name for p in (runs / "version_1" / "checkpoints").glob("last*")] == ["last.ckpt"]


class StartState(Callback):
    """What the trainer holds when training (re)starts: weights, momentum buffers, lrs, step and epoch."""

    def on_train_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.momentum = [s["momentum_buffer"].clone() for s in optimizer.state.values()]
        self.lrs = [g["lr"] for g in optimizer.param_groups]
        self.step, self.epoch = trainer.global_step, trainer.current_epoch


def test_mid_epoch_last_ckpt_restores_weights_optimizer_schedule_epoch_and_step(tmp_path):
    def run(ckpt_path=None) -> StartState:
        start = StartState()
        trainer = Trainer(
            accelerator="cpu",
            max_epochs=4,
            limit_train_batches=5,
            limit_val_batches=0,
            callbacks=[LinearWarmup(warmup=4), LastCheckpoint(every_n_train_steps=7, dirpath="ckpts"), start],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, data, ckpt_path=ckpt_path, weights_only=True)
        return start

    torch.manual_seed(0)
    options = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    model = ImageClassifier("convnet", num_classes=4, in_chans=1, model_kwargs=SMALL, optimizer=options)
    data = SyntheticDataModule(num_classes=4, image_size=8, num_channels=1, batch_size=4)
    run()
    ckpt = torch.load("ckpts/last.ckpt", weights_only=True)
    assert (ckpt["global_step"], ckpt["epoch"]) == (14, 2)  # written at step 14, in the middle of epoch 2

    torch.manual_seed(1)
    model = ImageClassifier("convnet", num_classes=4, in_chans=1, model_kwargs=SMALL, optimizer=options)
    start = run("ckpts/last.ckpt")
    assert (start.step, start.epoch) == (14, 2)
    for key, value in ckpt["state_dict"].items():
        torch.testing.assert_close(start.weights[key], value)
    saved = [s["momentum_buffer"] for s in ckpt["optimizer_states"][0]["state"].values()]
    assert len(start.momentum) == len(saved) > 0
    for got, want in zip(start.momentum, saved):
        torch.testing.assert_close(got, want)
    # the 4-epoch warmup goes on from step 14 = 2.8 epochs: lr = 0.1 × 2.8 / 4, not 0 as at a fresh start
    assert start.lrs == pytest.approx([0.07] * len(start.lrs))
