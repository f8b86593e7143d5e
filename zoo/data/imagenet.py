"""``ImageNetDataModule``: the ImageNet layout, ``ROOT/train/CLASS/*.JPEG`` and ``ROOT/val/CLASS/*.JPEG``.

The image folder module with ImageNet's defaults: train with RandomResizedCrop 224 (area 8–100 %) and
horizontal flips; validate by resizing to 256 (= 224 / crop_pct 0.875) and cropping the centre 224; normalise
with ImageNet's mean and std (or a pretrained backbone's own values). ImageNet's test labels are not public, so
there is no test split unless ``ROOT/test/CLASS/`` exists.
"""

from __future__ import annotations

from pathlib import Path

from zoo.data.folder import ImageFolderDataModule


class ImageNetDataModule(ImageFolderDataModule):
    """ImageNet (or any data set in its layout) with ImageNet's preprocessing; see the module docstring.

    Args:
        root: the folder holding ``train/`` and ``val/``, each with one sub-folder per class (``n01440764``, ...).
        batch_size: images per device and step.
        num_workers: data-loader processes (JPEG decoding is the bottleneck: use several per GPU).
        image_size: training and validation crop; None: the pretrained backbone's.
        crop_pct: the validation centre crop's share of the resized image (224 / 256); None: the backbone's.
        interpolation: resize interpolation (the reference recipe's ``bilinear``); None: the backbone's.
        fallback: mean/std for a model without pretrained weights: ImageNet's published values.
        check_images: open every header while listing (1.3 M files: off by default).
        test_fraction: share of train/ held out as a test split when there is no test/ folder.
        **kwargs: the other options of :class:`ImageFolderDataModule` and :class:`ImageDataModule`.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 256,
        num_workers: int = 8,
        image_size: int | list[int] | None = 224,
        crop_pct: float | None = 0.875,
        interpolation: str | None = "bilinear",
        fallback: str = "imagenet",
        check_images: bool = False,
        test_fraction: float = 0.0,
        **kwargs,
    ):
        if root and Path(root).is_dir():
            missing = [d for d in ("train", "val") if not (Path(root) / d).is_dir()]
            if missing:
                raise FileNotFoundError(
                    f"{root} is not in the ImageNet layout: no {' or '.join(d + '/' for d in missing)} folder. "
                    "Expected ROOT/train/CLASS/*.JPEG and ROOT/val/CLASS/*.JPEG (sort a flat val/ into class "
                    "folders first), or use ImageFolderDataModule for a folder of class folders"
                )
        super().__init__(
            root=root,
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            crop_pct=crop_pct,
            interpolation=interpolation,
            fallback=fallback,
            check_images=check_images,
            test_fraction=test_fraction,
            **kwargs,
        )
