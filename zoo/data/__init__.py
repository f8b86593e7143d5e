"""LightningDataModules of the zoo (imported when first used, so file listing and checks need no Lightning)."""

from importlib import import_module

_MODULES = {
    "CIFARDataModule": "zoo.data.cifar",
    "DigitsDataModule": "zoo.data.digits",
    "ImageDataModule": "zoo.data.base",
    "ImageFolderDataModule": "zoo.data.folder",
    "ImageNetDataModule": "zoo.data.imagenet",
    "StreamingDataModule": "zoo.data.streaming",
    "SyntheticDataModule": "zoo.data.synthetic",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
