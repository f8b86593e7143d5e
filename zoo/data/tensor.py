"""A dataset over in-memory image tensors, with per-sample augmentation then normalisation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset, default_collate


class Batch(tuple):
    """``(images, labels)`` of a batch a dataset read in one go: :func:`collate` hands it on as it is."""


def collate(samples):
    """``default_collate``, except that a :class:`Batch` is already one: [images, labels], without taking it
    apart into samples and stacking them again (~0.17 ms for 64 digits)."""
    return list(samples) if isinstance(samples, Batch) else default_collate(samples)


class TensorImageDataset(Dataset):
    """``(normalize(augment(x_i)), y_i)`` for images ``x`` (N×C×H×W, values in [0, 1]) and labels ``y``.

    A batch is read in one go (``__getitems__``, which torch's loader calls) when ``augment`` is None or works
    image by image on a whole batch (its ``batched`` attribute, as :class:`zoo.data.shift.RandomShift`);
    ``normalize`` takes batches. Such a batch is a :class:`Batch`, which the zoo's loaders pass on as it is
    (:func:`collate`).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        augment: Callable | None = None,
        normalize: Callable | None = None,
    ):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        self.x, self.y, self.augment, self.normalize = x, y, augment, normalize

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        if self.augment is not None:
            x = self.augment(x)
        if self.normalize is not None:
            x = self.normalize(x)
        return x, self.y[i]

    @property
    def batched(self) -> bool:
        """Whether a batch is augmented in one call (each image still drawing its own randomness)."""
        return self.augment is None or getattr(self.augment, "batched", False)

    def __getitems__(self, indices: list[int]) -> list | Batch:
        if not self.batched:
            return [self[i] for i in indices]
        i = torch.as_tensor(indices)
        x = self.x[i]
        if self.augment is not None:
            x = self.augment(x)
        if self.normalize is not None:
            x = self.normalize(x)
        return Batch((x, self.y[i]))


class WithIds(Dataset):
    """``(image, "prefix/i")`` for the images of another dataset, for ``predict``: the ids fill the CSV."""

    def __init__(self, base: Dataset, prefix: str):
        self.base, self.prefix = base, prefix

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i][0], f"{self.prefix}/{i}"
