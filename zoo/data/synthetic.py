"""``SyntheticDataModule``: random images of any shape and class count, for smoke runs and throughput.

Image i of a split has label y = i mod K and pixels x = a·t_y + ε, ε ~ N(0, 1): t_y is a fixed smooth random
pattern of class y (Gaussian noise on a 4×4 grid, upsampled) and a = ``signal``, so a model can learn the
classes; ``signal: 0`` gives pure noise that no model can beat chance on. Every image is drawn from its own
seed, so a split is the same in every epoch, worker and process, and nothing is held in memory unless
``pool > 0`` (draw ``pool`` images once and cycle through them: no generation cost per step, for throughput).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from zoo.data.base import MissingSplitError
from zoo.data.loader import eval_loader, train_loader
from zoo.data.tensor import WithIds

SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


class SyntheticImages(Dataset):
    """``(a·t_{i mod K} + ε_i, i mod K)``, ε_i drawn from seed (seed, i); see the module docstring."""

    def __init__(self, size: int, templates: torch.Tensor, signal: float, seed: int, pool: int = 0):
        self.size, self.templates, self.signal, self.seed = size, templates, signal, seed
        self.pool = [self.draw(i) for i in range(min(pool, size))] if pool > 0 else None

    def __len__(self) -> int:
        return self.size

    @property
    def targets(self) -> list[int]:
        return [i % len(self.templates) for i in range(self.size)]

    def draw(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        y = i % len(self.templates)
        noise = torch.randn(self.templates.shape[1:], generator=g)
        return self.signal * self.templates[y] + noise, y

    def __getitem__(self, i: int):
        if self.pool is not None:
            return self.pool[i % len(self.pool)]
        return self.draw(i)


class SyntheticDataModule(LightningDataModule):
    """Synthetic images (see the module docstring); ``predict`` runs on the test split with ids ``test/i``.

    Args:
        num_classes: classes K.
        image_size: side, or [H, W].
        num_channels: channels of every image.
        train_size: images of the training split (likewise ``val_size``, ``test_size``; 0: no such split).
        val_size: images of the validation split.
        test_size: images of the test split.
        signal: amplitude a of the class patterns against unit noise (0: pure noise).
        seed: seed of the class patterns and the images.
        pool: draw this many images per split once and cycle through them (0: draw every image).
        batch_size: images per device and step.
        num_workers: data-loader processes.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int | list[int] = 32,
        num_channels: int = 3,
        train_size: int = 1024,
        val_size: int = 256,
        test_size: int = 256,
        signal: float = 1.0,
        seed: int = 0,
        pool: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
    ):
        super().__init__()
        if num_classes < 1 or num_channels < 1 or min(train_size, val_size, test_size) < 0:
            raise ValueError(
                f"num_classes ({num_classes}) and num_channels ({num_channels}) must be >= 1 and the split "
                f"sizes ({train_size}, {val_size}, {test_size}) >= 0"
            )
        self.save_hyperparameters()
        self.num_classes, self.num_channels, self.batch_size = num_classes, num_channels, batch_size
        self.class_names = [f"class{k}" for k in range(num_classes)]
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        coarse = torch.randn(num_classes, num_channels, 4, 4, generator=torch.Generator().manual_seed(seed))
        self.templates = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        self.splits: dict[str, SyntheticImages] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        sizes = {"train": hp.train_size, "val": hp.val_size, "test": hp.test_size}
        for name, size in sizes.items():
            if size:
                seed = hp.seed * 10 + SPLIT_SEEDS[name]
                self.splits[name] = SyntheticImages(size, self.templates, hp.signal, seed, hp.pool)

    def _loader(self, name: str, shuffle: bool = False) -> DataLoader:
        self.setup()
        if name not in self.splits:
            raise MissingSplitError(f"no {name} split: set --data.{name}_size above 0")
        data, workers, pin = self.splits[name], self.hparams.num_workers, torch.cuda.is_available()
        if shuffle:  # resumes exactly mid-epoch (zoo.data.loader)
            return train_loader(data, self.batch_size, workers, trainer=self.trainer, pin_memory=pin)
        return eval_loader(data, self.batch_size, workers, pin_memory=pin)

    def has_split(self, name: str) -> bool:
        """Whether the split ``name`` holds images (``--data.<name>_size`` above 0)."""
        self.setup()
        return name in self.splits

    def split_targets(self, name: str) -> list[int]:
        """The labels of the split ``name``, in order."""
        self.setup()
        return list(self.splits[name].targets)

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

    def predict_dataloader(self):
        self.setup()
        return DataLoader(WithIds(self.splits["test"], "test"), batch_size=self.batch_size)
