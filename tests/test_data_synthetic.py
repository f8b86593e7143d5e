"""Synthetic images: any shape, reproducible, learnable class patterns or pure noise, and a CLI smoke run."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER

from zoo.data import SyntheticDataModule
from zoo.data.base import MissingSplitError


def test_any_shape_balanced_labels_and_reproducible_images():
    dm = SyntheticDataModule(num_classes=7, image_size=[20, 12], num_channels=5, train_size=70, batch_size=10)
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (10, 5, 20, 12) and y.tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    assert torch.bincount(torch.tensor(dm.splits["train"].targets)).tolist() == [10] * 7
    train = dm.splits["train"]
    assert torch.equal(train[3][0], train[3][0])  # the same image in every epoch and worker
    again = SyntheticDataModule(num_classes=7, image_size=[20, 12], num_channels=5, train_size=70)
    again.setup("fit")
    assert torch.equal(again.splits["train"][3][0], train[3][0])  # and in every process
    assert not torch.equal(dm.splits["val"][3][0], train[3][0])  # splits differ
    assert dm.num_classes == 7 and dm.num_channels == 5 and dm.class_names[0] == "class0"


@pytest.mark.parametrize("signal", [2.0, 0.0])
def test_class_means_are_the_scaled_patterns_plus_unit_noise(signal):
    dm = SyntheticDataModule(num_classes=2, image_size=8, num_channels=1, train_size=800, signal=signal)
    dm.setup("fit")
    images = torch.stack([dm.splits["train"][i][0] for i in range(800)])
    for k in range(2):
        mean = images[k::2].mean(0)  # 400 images of class k: a·t_k + noise of std 1/20
        assert torch.allclose(mean, signal * dm.templates[k], atol=0.25)
    noise = images[0::2] - signal * dm.templates[0]
    assert noise.std().item() == pytest.approx(1.0, abs=0.05)


def test_pool_cycles_through_images_drawn_once():
    dm = SyntheticDataModule(num_classes=4, train_size=100, pool=8)
    dm.setup("fit")
    train = dm.splits["train"]
    assert len(train.pool) == 8 and len(train) == 100
    assert torch.equal(train[3][0], train[11][0]) and train[3][1] == train[11][1] == 3


def test_missing_split_and_bad_sizes_are_errors():
    dm = SyntheticDataModule(test_size=0)
    with pytest.raises(MissingSplitError, match="no test split: set --data.test_size"):
        dm.test_dataloader()
    with pytest.raises(ValueError, match="num_classes \\(0\\)"):
        SyntheticDataModule(num_classes=0)


def test_synthetic_recipe_learns_the_patterns_through_the_cli(zoo_cli):
    args = ("--data.num_classes", "4", "--data.image_size", "16", "--data.train_size", "512")
    assert zoo_cli("fit", "--recipe", "synthetic", *args, "--trainer.max_epochs", "2", *FAST_TRAINER) == 0
    with Path("runs/synthetic/version_0/metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    top1 = [float(r["val/top1"]) for r in rows if r.get("val/top1")]
    assert top1[-1] > 0.9  # chance is 0.25
