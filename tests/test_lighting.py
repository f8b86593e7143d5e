"""PCA lighting noise: the offsets' covariance is ImageNet's colour PCA scaled by σ_α², one offset per image,
the same on normalised batches as before the normalisation, and the callback on a real image-folder run."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from callbacks import PCALighting
from callbacks.lighting import EIGVAL, EIGVEC, lighting_offsets, pca_lighting


def test_offsets_have_the_covariance_of_the_colour_pca():
    g = torch.Generator().manual_seed(0)
    delta = lighting_offsets(200_000, 0.1, generator=g).double()
    eigvec, eigval = torch.tensor(EIGVEC).double(), torch.tensor(EIGVAL).double()
    expected = eigvec @ torch.diag((0.1 * eigval) ** 2) @ eigvec.T  # Cov(V·(α ⊙ λ)) = V·diag(σ²λ²)·Vᵀ
    assert torch.allclose(delta.mean(0), torch.zeros(3, dtype=torch.double), atol=3e-4)
    assert torch.allclose(torch.cov(delta.T), expected, rtol=0.02, atol=2e-7)


def test_one_offset_per_image_and_the_same_before_or_after_normalising():
    x = torch.rand(5, 3, 6, 7)
    added = pca_lighting(x, 0.1, generator=torch.Generator().manual_seed(1)) - x
    offsets = lighting_offsets(5, 0.1, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(
        added, offsets[:, :, None, None].expand_as(x), atol=1e-6
    )  # constant over the pixels
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    norm = lambda t: (t - mean[:, None, None]) / std[:, None, None]  # noqa: E731
    before = norm(pca_lighting(x, 0.1, generator=torch.Generator().manual_seed(2)))
    after = pca_lighting(norm(x), 0.1, std, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(before, after, atol=1e-5)


class Seen(Callback):
    """The training batches as this callback sees them; ``seed`` reseeds just before the next callback."""

    def __init__(self, seed: int | None = None):
        self.seed, self.batches = seed, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch[0].clone())
        if self.seed is not None:
            torch.manual_seed(self.seed + batch_idx)


def test_callback_adds_each_images_offset_over_the_data_modules_std(tmp_path):
    from test_data_folder import TINY, make_folder

    from zoo.data import ImageFolderDataModule
    from zoo.training.module import ImageClassifier

    root = make_folder(tmp_path / "imgs", {"red": 6, "green": 6}, size=16)
    dm = ImageFolderDataModule(
        str(root), image_size=16, crop_pct=1.0, fallback="imagenet", num_workers=0, batch_size=4
    )
    before, after = Seen(seed=10), Seen()
    trainer = Trainer(
        max_epochs=1,
        callbacks=[before, PCALighting(0.1), after],
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ImageClassifier("convnet", num_classes=2, model_kwargs=TINY), dm)
    std = torch.tensor(dm.config["std"])
    assert len(before.batches) == len(after.batches) > 0
    for i, (b, a) in enumerate(zip(before.batches, after.batches)):
        torch.manual_seed(10 + i)
        expected = lighting_offsets(len(b), 0.1) / std
        assert torch.allclose(a - b, expected[:, :, None, None].expand_as(b), atol=1e-5)


def test_bad_batches_and_arguments_are_errors():
    with pytest.raises(ValueError, match="alpha_std=-1"):
        PCALighting(-1)
    with pytest.raises(ValueError, match=r"needs RGB image batches .* \(2, 1, 4, 4\)"):
        PCALighting().on_train_batch_start(None, None, [torch.zeros(2, 1, 4, 4), torch.zeros(2)], 0)
