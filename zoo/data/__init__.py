"""LightningDataModules of the zoo."""

from zoo.data.base import ImageDataModule
from zoo.data.cifar import CIFARDataModule
from zoo.data.digits import DigitsDataModule
from zoo.data.folder import ImageFolderDataModule
from zoo.data.imagenet import ImageNetDataModule
from zoo.data.synthetic import SyntheticDataModule

__all__ = [
    "CIFARDataModule",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "SyntheticDataModule",
]
