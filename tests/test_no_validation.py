"""A run whose data has no validation split (``val_fraction 0``, or too few images to hold one out): no validation
loop, the last epoch's weights are the checkpoint, and they are what is tested after fit."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from conftest import FAST_TRAINER
from test_finetune import make_folder


def test_no_validation_split_keeps_and_tests_the_last_weights(tmp_path, zoo_cli, caplog, recwarn):
    root = make_folder(tmp_path / "pets", per_class=6)
    args = [
        "fit",
        "--recipe",
        "folder",
        "--data.root",
        root,
        "--data.val_fraction",
        "0",
        "--data.test_fraction",
        "0.5",
    ]
    args += ["--data.image_size", "32", "--data.num_workers", "0", "--trainer.max_epochs", "2", *FAST_TRAINER]
    with caplog.at_level(logging.INFO):
        assert zoo_cli(*args) == 0
    assert "No validation split, so no val/top1 to choose a checkpoint by" in caplog.text
    assert not [w for w in recwarn if "monitored key" in str(w.message)]
    (log,) = Path("runs/folder").glob("version_*/metrics.csv")
    rows = list(csv.DictReader(log.open()))
    assert any(r.get("test/top1") for r in rows) and not any(r.get("val/top1") for r in rows)
    checkpoints = sorted(p.name for p in Path("runs/folder").glob("version_*/checkpoints/*.ckpt"))
    assert checkpoints == ["epoch001.ckpt", "last.ckpt"]  # the last epoch's weights, no val score in the name
