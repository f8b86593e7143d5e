"""Image files on disk: list them (torchvision's folder scan), check their headers, load them without crashing.

A file whose extension is not an image's is ignored; a file that PIL cannot identify is skipped at listing
time; a file that fails while decoding (a truncated JPEG) is skipped when read, reported once by name and
counted in ``ImageFiles.skipped``. Neither ever stops an epoch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class Listing:
    """Files found under a folder: ``samples`` (path, label) kept, the rest ignored or unreadable."""

    samples: list[tuple[str, int]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # not an image by its extension
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def report(self, where: str | Path) -> None:
        """Warn about ignored and unreadable files, naming the first few of each."""
        if self.ignored:
            some = ", ".join(self.ignored[:5])
            warnings.warn(
                f"ignored {len(self.ignored)} file(s) under {where} that are not images "
                f"({' '.join(IMG_EXTENSIONS)}): {some}",
                stacklevel=2,
            )
        if self.unreadable:
            some = "; ".join(f"{p} ({why})" for p, why in self.unreadable[:5])
            warnings.warn(
                f"skipped {len(self.unreadable)} unreadable image(s) under {where}: {some}", stacklevel=2
            )


def header_error(path: str) -> str | None:
    """Why PIL cannot identify the image ``path`` from its header, or None when it can."""
    try:
        with Image.open(path) as img:
            img.verify()
    except READ_ERRORS as err:
        return str(err) or type(err).__name__
    return None


def _filter(listing: Listing, check: bool) -> Callable[[str], bool]:
    def keep(path: str) -> bool:
        if not path.lower().endswith(IMG_EXTENSIONS):
            listing.ignored.append(path)
            return False
        why = header_error(path) if check else None
        if why:
            listing.unreadable.append((path, why))
        return why is None

    return keep


def list_class_folders(directory: str | Path, class_names: Sequence[str], check: bool = True) -> Listing:
    """Images of ``directory/CLASS/**`` for each class name, labelled by its index in ``class_names``."""
    listing = Listing()
    class_to_idx = {name: i for i, name in enumerate(class_names)}
    listing.samples = make_dataset(
        str(directory), class_to_idx, is_valid_file=_filter(listing, check), allow_empty=True
    )
    return listing


def list_images(directory: str | Path, check: bool = True) -> Listing:
    """Every image under ``directory`` (recursively, sorted), labelled −1: the inputs of ``predict``."""
    listing = Listing()
    keep = _filter(listing, check)
    for root, _, names in sorted(os.walk(directory, followlinks=True)):
        for name in sorted(names):
            path = os.path.join(root, name)
            if keep(path):
                listing.samples.append((path, -1))
    return listing


class ImageFiles(Dataset):
    """``(transform(image), label)``, or ``(transform(image), path)`` when ``return_path``, for (path, label) pairs.

    A file that cannot be decoded is warned about once by name, added to ``skipped`` (per process), and
    replaced by the next readable file of the list (``on_error="substitute"``, batches stay full) or
    returned as None (``"drop"``, for predict; :func:`collate_present` leaves it out of the batch).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: Callable | None = None,
        mode: str = "RGB",
        on_error: str = "substitute",
        return_path: bool = False,
    ):
        if on_error not in ("substitute", "drop"):
            raise ValueError(f"on_error must be 'substitute' or 'drop', not {on_error!r}")
        self.samples = list(samples)
        self.transform, self.mode, self.on_error, self.return_path = transform, mode, on_error, return_path
        self.skipped: set[str] = set()

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, path: str) -> Image.Image:
        with open(path, "rb") as f:
            return Image.open(f).convert(self.mode)

    def __getitem__(self, i: int):
        for step in range(len(self.samples)):
            path, label = self.samples[(i + step) % len(self.samples)]
            try:
                image = self.load(path)
            except READ_ERRORS as err:
                if path not in self.skipped:
                    self.skipped.add(path)
                    warnings.warn(
                        f"skipped unreadable image {path}: {err} ({len(self.skipped)} skipped so far)",
                        stacklevel=2,
                    )
                if self.on_error == "drop":
                    return None
                continue
            x = self.transform(image) if self.transform is not None else image
            return x, (path if self.return_path else label)
        raise RuntimeError(f"none of the {len(self.samples)} images from {self.samples[0][0]} on is readable")


def collate_present(batch: list, shape: Sequence[int]):
    """``default_collate`` of the items that are not None; an all-None batch gives an empty N=0 batch."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return torch.zeros(0, *shape), []
    return default_collate(batch)
