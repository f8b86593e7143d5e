"""scikit-learn's bundled handwritten digits: 1,797 real 8×8 grey images, 10 classes, no download."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from zoo.data.loader import eval_loader, train_loader
from zoo.data.normalize import fit_normalizer
from zoo.data.shift import RandomShift
from zoo.data.split import stratified_split
from zoo.data.tensor import TensorImageDataset, WithIds


class DigitsDataModule(LightningDataModule):
    """Digits from ``sklearn.datasets.load_digits`` with a stratified train/val/test split fixed by ``seed``.

    Pixel values 0..16 are scaled to [0, 1]; then ``normalize`` (statistics from the training split only:
    none, center, standardize, pca or zca). ``augment`` shifts training images by up to ``shift`` pixels.
    ``predict`` runs on the test split.

    Args:
        batch_size: images per device and step; 0 = the whole split in one batch (full-batch L-BFGS).
        val_fraction: share of all images held out for validation (model selection).
        test_fraction: share held out for the final test.
        seed: seed of the split.
        normalize: input preprocessing mode.
        augment: random shifts of training images.
        shift: largest shift in pixels.
        num_workers: data-loader workers.
        flip_invariant: whether a mirrored digit keeps its class: it does not (a mirrored 2 is no digit, a
            mirrored 3 is an ε), so ``zoo test|predict --tta flip`` is refused unless this is set true.
    """

    num_classes = 10
    num_channels = 1
    class_names = [str(d) for d in range(10)]

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        normalize: str = "standardize",
        augment: bool = True,
        shift: int = 1,
        num_workers: int = 0,
        flip_invariant: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.splits: dict[str, TensorImageDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        hp = self.hparams
        idx = stratified_split(y.numpy(), hp.val_fraction, hp.test_fraction, hp.seed)
        norm = fit_normalizer(x[idx["train"]], hp.normalize)
        augment = None
        if hp.augment and hp.shift > 0:
            augment = RandomShift(hp.shift)  # RandomCrop(8, padding=shift), a batch at a time
        for name, ids in idx.items():
            ids_t = torch.as_tensor(ids)
            aug = augment if name == "train" else None
            self.splits[name] = TensorImageDataset(x[ids_t], y[ids_t], aug, norm)

    def _loader(self, dataset: Dataset, shuffle: bool = False) -> DataLoader:
        size, workers = self.batch_size or len(dataset), self.hparams.num_workers
        if shuffle:  # resumes exactly mid-epoch, with the same random shifts (zoo.data.loader)
            return train_loader(dataset, size, workers, trainer=self.trainer)
        return eval_loader(dataset, size, workers)

    def train_dataloader(self):
        return self._loader(self.splits["train"], shuffle=True)

    def has_split(self, name: str) -> bool:
        """Whether the split ``name`` holds images (``--data.<name>_fraction`` above 0)."""
        self.setup(name)
        return name in self.splits

    def split_targets(self, name: str) -> list[int]:
        """The labels of the split ``name``, in order."""
        return self._split(name).y.tolist()

    def _split(self, name: str) -> TensorImageDataset:
        if name not in self.splits:  # (the recipes choose their best checkpoint on the validation split)
            raise ValueError(
                f"--data.{name}_fraction is 0: the digits have no {name} split; give it a share above 0"
            )
        return self.splits[name]

    def val_dataloader(self):
        return self._loader(self._split("val"))

    def test_dataloader(self):
        return self._loader(self._split("test"))

    def predict_dataloader(self):
        return self._loader(WithIds(self._split("test"), "test"))
