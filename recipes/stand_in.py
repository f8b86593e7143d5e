"""A recipe's training data reduced to what counts its steps (how many images, the batch), for drawing or
checking a run's schedule on a machine that does not hold the data (``zoo schedule`` of an ImageNet recipe
on a laptop).

The number of training images comes from the data set's published size when the data module is one of the
zoo's (ImageNet, CIFAR), less the share ``val_fraction`` holds out; for any other data it is unknown, and the
schedule is drawn against epochs with a nominal number of steps per epoch.
"""

from __future__ import annotations

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

# training images of the data sets the zoo's data modules read, as published
KNOWN_TRAIN_IMAGES = {
    "ImageNetDataModule": 1_281_167,  # ILSVRC-2012 train/ (Russakovsky et al. 2015); val/ is its own folder
    "CIFARDataModule": 50_000,  # CIFAR-10 and CIFAR-100 training batches (Krizhevsky 2009)
}
NOMINAL_STEPS_PER_EPOCH = 100  # when the size is unknown: enough points to draw a curve against epochs


class _Length(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        raise RuntimeError("the stand-in data has no images: it only counts steps")


class StandInData(LightningDataModule):
    """``train_images`` images in batches of ``batch_size`` per device (full batches only, as the zoo trains),
    and nothing else.

    Args:
        batch_size: images per device and step, the recipe's.
        train_images: images in the training split.
        num_classes: classes of the data (the model's head).
        num_channels: input channels.
        known: whether ``train_images`` is the data set's real size (else a nominal one).
        data: the data module it stands in for.
    """

    def __init__(
        self,
        batch_size: int = 32,
        train_images: int = 3200,
        num_classes: int = 1000,
        num_channels: int = 3,
        known: bool = False,
        data: str = "",
    ):
        super().__init__()
        self.batch_size, self.train_images, self.known, self.data = batch_size, train_images, known, data
        self.num_classes, self.num_channels = num_classes, num_channels

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Length(self.train_images), batch_size=self.batch_size, drop_last=True)


def stand_in_config(data: Namespace, world: int) -> Namespace:
    """The config of a :class:`StandInData` for the data config ``data`` (class_path and init_args) of a run
    on ``world`` devices in all."""
    init = data.get("init_args") or Namespace()
    name = str(data.get("class_path", "")).rsplit(".", 1)[-1]
    batch = int(init.get("batch_size") or 32)
    size = KNOWN_TRAIN_IMAGES.get(name)
    if size is not None and name != "ImageNetDataModule":
        size -= round(size * float(init.get("val_fraction") or 0.0))
    train_images = size if size is not None else NOMINAL_STEPS_PER_EPOCH * batch * world
    args = dict(batch_size=batch, train_images=train_images, known=size is not None, data=name)
    if init.get("num_classes"):
        args["num_classes"] = int(init.get("num_classes"))
    return Namespace(class_path=f"{__name__}.StandInData", init_args=Namespace(**args))
