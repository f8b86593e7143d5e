"""Atomic checkpoint writes: a save that fails part-way leaves the previous file whole and no debris; a partial
file left by a killed process goes when the checkpoint beside it is loaded or saved again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from zoo.runtime.checkpoint_io import AtomicCheckpointIO


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("the save stops here")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_save_that_fails_part_way_keeps_the_previous_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.arange(1000.0)}, path)
    with pytest.raises(RuntimeError, match="the save stops here"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000), "bad": Unpicklable()}, path)
    kept = torch.load(path, weights_only=True)
    assert kept["global_step"] == 1 and torch.equal(kept["w"], torch.arange(1000.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left behind
    io.save_checkpoint({"global_step": 3}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 3


def test_partial_files_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    dead = tmp_path / f".last.ckpt.{dead_pid()}.tmp"
    alive = tmp_path / f".last.ckpt.{os.getppid()}.tmp"  # another process that is still running
    other = tmp_path / f".best.ckpt.{dead_pid()}.tmp"  # another checkpoint's: left to its own saves
    for p in (dead, alive, other):
        p.write_bytes(b"PK\x03\x04 cut off")
    assert io.load_checkpoint(path, weights_only=True)["global_step"] == 1
    assert not dead.exists() and alive.exists() and other.exists()


def test_last_ckpt_follows_every_epoch_even_when_the_best_stops_improving(tmp_path):
    """Lightning writes ``last.ckpt`` only at steps where it writes a top-k checkpoint; the zoo's checkpoint
    writes it at the end of every epoch, so a resume from "last" starts after the final epoch, not the best one."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    from callbacks.best_checkpoint import BestCheckpoint

    class Worsening(BoringModel):  # the monitored score falls every epoch: epoch 0 stays the best
        def on_validation_epoch_end(self):
            self.log("val/score", -float(self.current_epoch))

    checkpoint = BestCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", save_last=True)
    trainer = Trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=1, callbacks=[checkpoint], logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(Worsening())
    assert checkpoint.best_model_path.endswith("epoch=0-step=2.ckpt")
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 6)


def fit_scored(tmp_path, scores, callbacks=()):
    """A BoringModel fitted for ``len(scores)`` epochs, logging ``val/score`` = ``scores[epoch]`` (best: max)."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    from callbacks.best_checkpoint import BestCheckpoint

    checkpoint = BestCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", save_last=True)
    trainer = Trainer(
        max_epochs=len(scores), limit_train_batches=2, limit_val_batches=1, callbacks=[checkpoint, *callbacks],
        logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip

    class Scored(BoringModel):
        def on_validation_epoch_end(self):
            self.log("val/score", float(scores[self.current_epoch]))

    trainer.fit(Scored())
    return checkpoint


def test_where_hard_links_fail_last_ckpt_is_written_as_a_file(tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError("this file system has no hard links")

    monkeypatch.setattr(os, "link", no_links)
    checkpoint = fit_scored(tmp_path, [0.0, 1.0])
    best, last = checkpoint.best_model_path, tmp_path / "last.ckpt"
    assert not os.path.samefile(best, last)
    assert torch.load(last, weights_only=True)["epoch"] == torch.load(best, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=1-step=4.ckpt", "last.ckpt"]  # no debris


def test_atomic_link_replaces_the_target_and_declines_remote_paths(tmp_path):
    from zoo.runtime.checkpoint_io import atomic_link

    source, target = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    source.write_bytes(b"new")
    target.write_bytes(b"old")
    assert atomic_link(source, target)
    assert target.read_bytes() == b"new" and os.path.samefile(source, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not atomic_link(source, "memory://bucket/last.ckpt")
