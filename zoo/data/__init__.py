"""LightningDataModules of the zoo."""

from zoo.data.base import ImageDataModule
from zoo.data.digits import DigitsDataModule
from zoo.data.folder import ImageFolderDataModule

__all__ = ["DigitsDataModule", "ImageDataModule", "ImageFolderDataModule"]
