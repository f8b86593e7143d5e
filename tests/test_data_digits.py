"""The digits data module: real data, a fixed stratified split, statistics from the training split only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data import DigitsDataModule
from zoo.data.normalize import fit_normalizer
from zoo.data.split import stratified_split


def test_split_is_stratified_disjoint_and_fixed_by_seed():
    labels = np.repeat(np.arange(10), 50)
    a = stratified_split(labels, 0.2, 0.2, seed=1)
    b = stratified_split(labels, 0.2, 0.2, seed=1)
    c = stratified_split(labels, 0.2, 0.2, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    everything = np.concatenate([a["train"], a["val"], a["test"]])
    assert sorted(everything.tolist()) == list(range(500))  # disjoint and complete
    for part, size in (("train", 300), ("val", 100), ("test", 100)):
        assert len(a[part]) == size
        assert np.bincount(labels[a[part]]).tolist() == [size // 10] * 10


def test_split_rejects_fractions_that_leave_no_training_data():
    with pytest.raises(ValueError, match="val_fraction=0.6"):
        stratified_split(np.zeros(10), 0.6, 0.5)


def test_digits_module_shapes_counts_and_train_statistics():
    dm = DigitsDataModule(batch_size=32, augment=False)
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360 and sizes["val"] == 360 and sizes["train"] == 1077
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and y.dtype == torch.long
    train = torch.stack([dm.splits["train"][i][0] for i in range(len(dm.splits["train"]))])
    # standardised with the training split's own mean and std
    assert train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert train.std().item() == pytest.approx(1.0, abs=1e-3)
    val = torch.stack([dm.splits["val"][i][0] for i in range(len(dm.splits["val"]))])
    assert abs(val.mean().item()) > 1e-4  # not refitted on validation data


def test_augmentation_only_touches_training_images():
    dm = DigitsDataModule(augment=True, shift=1)
    dm.setup("fit")
    val_a, val_b = dm.splits["val"][0][0], dm.splits["val"][0][0]
    assert torch.equal(val_a, val_b)
    draws = {tuple(dm.splits["train"][0][0].flatten().tolist()) for _ in range(20)}
    assert len(draws) > 1  # random shifts


@pytest.mark.parametrize("mode", ["center", "standardize"])
def test_per_channel_statistics(mode):
    x = torch.randn(200, 3, 4, 4) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 5
    out = fit_normalizer(x, mode)(x)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    expected_std = torch.ones(3) if mode == "standardize" else torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(out.std(dim=(0, 2, 3)), expected_std, rtol=0.05)


@pytest.mark.parametrize("mode", ["pca", "zca"])
def test_whitening_gives_identity_covariance(mode):
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(16, 16, generator=g)
    x = (torch.randn(4000, 16, generator=g) @ mix).view(4000, 1, 4, 4)
    out = fit_normalizer(x, mode, eps=1e-6)(x).flatten(1).double()
    cov = torch.cov(out.T)
    assert torch.allclose(cov, torch.eye(16, dtype=torch.float64), atol=1e-3)
    if mode == "zca":  # ZCA stays closest to the input among whitenings: rotated back to pixel space
        pca = fit_normalizer(x, "pca", eps=1e-6)(x).flatten(1)
        centred = x.flatten(1) - x.flatten(1).mean(0)
        assert (out.float() - centred).norm() < (pca - centred).norm()


def test_unknown_normalisation_names_the_value():
    with pytest.raises(ValueError, match="'whiten'"):
        fit_normalizer(torch.zeros(2, 1, 2, 2), "whiten")
