"""``ImageFolderDataModule``: a folder of images with one sub-folder per class.

Two layouts: ``ROOT/train/CLASS/*``, ``ROOT/val/CLASS/*`` (and ``ROOT/test/CLASS/*``) are used as they are; a
plain ``ROOT/CLASS/*`` is split into train / val / test, stratified by class with a fixed seed. Of a layout with
split folders, a validation split that has no folder of its own is held out of ``train`` the same way; a test
split is not, unless ``test_fraction`` is given: the user laid out what trains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from zoo.data.base import ImageDataModule
from zoo.data.files import ImageFiles, Listing, class_dirs, class_owners, list_class_folders, list_images
from zoo.data.split import stratified_split

VAL_DIRS = ("val", "valid", "validation")
DEFAULT_TEST_FRACTION = 0.1  # of a plain ROOT/CLASS folder, when test_fraction is unset


def _class_dirs(directory: Path) -> list[str]:
    return class_dirs(directory)


class ImageFolderDataModule(ImageDataModule):
    """Images under ``root`` (one sub-folder per class), split as in the module docstring; ``predict_dir``
    (every image below it) is what ``zoo predict`` classifies, one CSV row per file with its path.

    Args:
        root: the folder of class folders, or of ``train/``, ``val/``, ``test/`` folders of class folders.
        predict_dir: images to predict; None: the test split (else the validation split) of ``root``.
        class_names: the classes in label order; None: the sub-folders of ``root``, sorted. Needed
            without ``root`` (predict only); restored from the checkpoint by ``zoo predict``.
        val_fraction: share of the images held out for validation when there is no ``val/`` folder.
        test_fraction: share held out for the final test when there is no ``test/`` folder; None: 0.1 of a plain
            ``ROOT/CLASS`` folder, none of a ``train/`` + ``val/`` layout (no test split: said once).
        seed: seed of the stratified split.
        channels: 3 (RGB) or 1 (grey images).
        check_images: open every image's header while listing, so unreadable files are skipped up front.
        min_per_class: hold a validation split out of the training folder only when every class keeps this
            many training images and gets this many validation images; otherwise train on all of them, say so,
            and leave the choices to cross-validation (fine-tuning's linear probe). 0: always hold out.
        **kwargs: preprocessing, augmentation and loader options of :class:`ImageDataModule`.
    """

    def __init__(
        self,
        root: str | None = None,
        predict_dir: str | None = None,
        class_names: list[str] | None = None,
        val_fraction: float = 0.2,
        test_fraction: float | None = None,
        seed: int = 0,
        channels: int = 3,
        check_images: bool = True,
        min_per_class: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), not {channels}")
        self.num_channels = channels
        self.root = Path(root) if root else None
        self.train_dir = self._train_dir() if self.root else None
        found = _class_dirs(self.train_dir) if self.train_dir else None
        if found is not None and class_names is not None and list(class_names) != found:
            raise ValueError(
                f"class_names {list(class_names)} (given, or saved in the checkpoint) differ from the class "
                f"folders of {self.train_dir}: {found}; a model predicts the classes it was trained on"
            )
        if found is None and class_names is None:
            raise ValueError(
                "give --data.root (a folder with one sub-folder per class) or, to predict only, "
                "--data.class_names"
            )
        self.class_names = list(found if found is not None else class_names)
        self.hparams["class_names"] = self.class_names  # saved in checkpoints, read back by `zoo predict`

    def _train_dir(self) -> Path:
        root = self.root
        if not root.is_dir():
            raise FileNotFoundError(
                f"data root {str(root)!r} does not exist or is not a folder; "
                "give --data.root a folder with one sub-folder of images per class"
            )
        train = root / "train"
        if not train.is_dir() and any((root / d).is_dir() for d in (*VAL_DIRS, "test")):
            raise FileNotFoundError(f"{root} has val/ or test/ folders but no train/ folder")
        directory = train if train.is_dir() else root
        if not _class_dirs(directory):
            raise FileNotFoundError(
                f"no class folders in {str(directory)!r}: expected {directory}/CLASS_NAME/IMAGE.jpg "
                "(one sub-folder per class)"
            )
        return directory

    def _subdir(self, names: tuple[str, ...]) -> Path | None:
        if self.train_dir == self.root:
            return None
        return next((self.root / n for n in names if (self.root / n).is_dir()), None)

    def _list(self, directory: Path, where: str) -> list[tuple[str, int]]:
        extra = sorted(set(_class_dirs(directory)) - set(self.class_names))
        if extra:
            raise ValueError(
                f"{directory} has class folders {extra} that {self.train_dir} does not have; "
                "every class of val/ and test/ needs training images"
            )
        splits = {"train": self.train_dir, "val": self._subdir(VAL_DIRS), "test": self._subdir(("test",))}
        owners = class_owners({k: d for k, d in splits.items() if d is not None}, self.class_names)
        check = self.hparams.check_images
        listing: Listing = list_class_folders(directory, self.class_names, check, owners, where)
        listing.report(directory)
        if where == "train":
            counts = np.bincount([y for _, y in listing.samples], minlength=self.num_classes)
            for name, count in zip(self.class_names, counts):
                if count == 0:
                    raise FileNotFoundError(
                        f"class folder {str(directory / name)!r} holds no readable images; "
                        "add images (.jpg, .png, ...) or remove the folder"
                    )
        return listing.samples

    def make_splits(self) -> dict[str, Dataset]:
        hp = self.hparams
        if self.root is None:
            raise ValueError("fit, validate and test need --data.root (the folder of class folders)")
        val_dir, test_dir = self._subdir(VAL_DIRS), self._subdir(("test",))
        samples = self._list(self.train_dir, "train")
        given = {
            name: self._list(d, name) for name, d in (("val", val_dir), ("test", test_dir)) if d is not None
        }
        labels = np.array([y for _, y in samples])
        test_fraction = 0.0 if test_dir else self._test_fraction(val_dir)
        val_fraction = 0.0 if val_dir else self._val_fraction(labels, test_fraction)
        try:
            idx = stratified_split(labels, val_fraction, test_fraction, hp.seed)
        except ValueError as err:
            counts = np.bincount(labels, minlength=self.num_classes)
            raise ValueError(
                f"cannot split the {len(labels)} images of {self.train_dir} by class: {err}. Each held-out "
                f"split needs an image of every class ({self.num_classes}) and each class two images or more "
                f"(the rarest, {self.class_names[int(counts.argmin())]!r}, has {counts.min()}): change "
                "--data.val_fraction / --data.test_fraction, add images, or add val/ and test/ folders"
            ) from err
        parts = {name: [samples[i] for i in ids] for name, ids in idx.items()} | given
        mode = "L" if self.num_channels == 1 else "RGB"
        return {
            name: ImageFiles(parts[name], mode=mode) for name in ("train", "val", "test") if parts.get(name)
        }

    def _test_fraction(self, val_dir: Path | None) -> float:
        """The share of ``train`` held out for the test: ``test_fraction`` when given; unset, 0.1 of a plain
        folder and none of a ``train/`` + ``val/`` layout (said once, on rank 0)."""
        given = self.hparams.test_fraction
        if given is not None:
            return given
        if val_dir is None:
            return DEFAULT_TEST_FRACTION
        rank_zero_info(
            f"No test split: {self.root} has train/ and {val_dir.name}/ but no test/, so every image of train/ trains "
            "and results are reported on the validation split (which also chooses the checkpoint: an optimistic "
            "estimate). Add a test/ folder for an unbiased one."
        )
        return 0.0

    def _val_fraction(self, labels: np.ndarray, test_fraction: float) -> float:
        """``val_fraction``, or 0 when holding it out breaks ``min_per_class`` (said once, on rank 0)."""
        hp, need = self.hparams, self.hparams.min_per_class
        if not need or not hp.val_fraction:
            return hp.val_fraction
        rarest = float(np.bincount(labels, minlength=self.num_classes).min())
        held, kept = rarest * hp.val_fraction, rarest * (1 - test_fraction - hp.val_fraction)
        if kept >= need and held >= need:
            return hp.val_fraction
        rank_zero_info(
            f"No validation split: holding out val_fraction {hp.val_fraction:g} would leave the rarest class "
            f"about {kept:.0f} images to train on and {held:.0f} to validate on (fewer than "
            f"min_per_class {need}); all {len(labels) - round(len(labels) * test_fraction)} images train, and "
            "choices are made by cross-validation"
        )
        return 0.0

    def make_predict_set(self) -> Dataset:
        mode = "L" if self.num_channels == 1 else "RGB"
        directory = self.hparams.predict_dir
        if directory is None:
            self.setup("fit")
            split = next(self.splits[n] for n in ("test", "val", "train") if n in self.splits)
            return ImageFiles(split.samples, mode=mode, on_error="drop", return_path=True)
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"predict_dir {directory!r} does not exist or is not a folder")
        listing = list_images(directory, check=True)
        listing.report(directory)
        if not listing.samples:
            raise FileNotFoundError(f"predict_dir {directory!r} holds no readable images (.jpg, .png, ...)")
        return ImageFiles(listing.samples, mode=mode, on_error="drop", return_path=True)
