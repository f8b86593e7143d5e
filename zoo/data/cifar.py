"""``CIFARDataModule``: CIFAR-10 / CIFAR-100 (32×32 colour images) through torchvision's datasets.

torchvision downloads and reads the python-pickle batches (``ROOT/cifar-10-batches-py/data_batch_1`` ...,
``ROOT/cifar-100-python/train`` ...); 10 % of the 50,000 training images are held out for validation
(stratified, fixed seed) and the official 10,000 test images are the test split. Training uses the classic
recipe: pad by 4 pixels (reflect), random 32×32 crop, horizontal flip; inputs are normalised with the training
split's own per-channel mean and std (or a pretrained backbone's preprocessing, resized to its input size).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100

from zoo.data.base import ImageDataModule
from zoo.data.split import stratified_split


def _without_md5(cls: type[CIFAR10]) -> type[CIFAR10]:
    """``cls`` reading the same files without comparing MD5 sums (for a copy written or re-packed locally)."""
    return type(
        cls.__name__,
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


VARIANTS = {10: CIFAR10, 100: CIFAR100}
UNCHECKED = {k: _without_md5(v) for k, v in VARIANTS.items()}


class ArrayImages(Dataset):
    """``(transform(image_i), label_i)`` for uint8 images N×H×W×C, or ``(transform(image_i), "NAME/i")``."""

    def __init__(self, data: np.ndarray, targets, name: str, transform: Callable | None = None):
        self.data, self.targets, self.name, self.transform = data, list(targets), name, transform
        self.return_id = False

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.data[i])
        x = self.transform(image) if self.transform is not None else image
        return x, (f"{self.name}/{i}" if self.return_id else self.targets[i])


class CIFARDataModule(ImageDataModule):
    """CIFAR-10 or CIFAR-100 as in the module docstring; ``predict`` runs on the test images (ids ``test/i``).

    Args:
        root: folder of the ``cifar-10-batches-py`` / ``cifar-100-python`` folder (downloaded there if missing).
        variant: 10 or 100 classes.
        download: download the data set when it is missing (needs internet once).
        check_md5: compare the files with torchvision's MD5 sums; false for a copy written locally.
        val_fraction: share of the training images held out for validation.
        seed: seed of that split.
        batch_size: images per device and step.
        crop: ``pad`` (pad and random crop), ``random_resized`` or ``center``.
        **kwargs: the preprocessing, augmentation and loader options of :class:`ImageDataModule`.
    """

    def __init__(
        self,
        root: str = "data",
        variant: int = 10,
        download: bool = True,
        check_md5: bool = True,
        val_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 128,
        crop: str = "pad",
        **kwargs,
    ):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be 10 or 100 (CIFAR-10 or CIFAR-100), not {variant}")
        super().__init__(batch_size=batch_size, crop=crop, **kwargs)
        self.dataset_cls = (VARIANTS if check_md5 else UNCHECKED)[variant]
        self.class_names = [str(i) for i in range(variant)]  # the names are read from the data in setup()
        self._test: CIFAR10 | None = None

    def default_config(self) -> dict:
        return {"input_size": (3, 32, 32), "crop_pct": 1.0, "interpolation": "bilinear"}

    def _load(self, train: bool, download: bool = False) -> CIFAR10:
        root = self.hparams.root
        try:
            return self.dataset_cls(root, train=train, download=download)
        except RuntimeError as err:
            folder = Path(root) / self.dataset_cls.base_folder
            raise FileNotFoundError(
                f"CIFAR-{self.hparams.variant} not found or incomplete in {str(folder)!r} ({err}). "
                "Set --data.download true (needs internet once), point --data.root at the folder holding it, "
                "or --data.check_md5 false for a copy written locally"
            ) from err

    def prepare_data(self) -> None:
        if self.hparams.download:
            self._load(train=True, download=True)
            self._load(train=False, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self._test is None:
            self._test = self._load(train=False)
            self.class_names = list(self._test.classes)
        super().setup(stage)

    def make_splits(self) -> dict[str, Dataset]:
        hp = self.hparams
        full = self._load(train=True)
        targets = np.asarray(full.targets)
        idx = stratified_split(targets, hp.val_fraction, 0.0, hp.seed)
        splits = {name: ArrayImages(full.data[ids], targets[ids], name) for name, ids in idx.items()}
        splits["test"] = ArrayImages(self._test.data, self._test.targets, "test")
        return splits

    def make_predict_set(self) -> Dataset:
        self.setup("predict")
        images = ArrayImages(self._test.data, self._test.targets, "test")
        images.return_id = True
        return images
