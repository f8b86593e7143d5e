"""LightningDataModules of the zoo."""

from zoo.data.digits import DigitsDataModule

__all__ = ["DigitsDataModule"]
