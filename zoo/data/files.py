"""Image files on disk: list them as a file browser shows them, check their headers, load them without crashing.

Listing walks each class folder (``CLASS/**``), follows a folder link at most once and counts every file once,
by its real path: a link back up (``dog/up -> ..``), a loop (``cat/loop -> .``) or a second path to the same
folder or file is not followed again, and a link into another class's or another split's folder adds nothing
(the file counts in the folder that really holds it). Hidden files (``.name``) and files whose extension is not
an image's are left out; a file PIL cannot identify is skipped at listing time (``check``); each is counted by
reason in :class:`Listing`. A file that fails while decoding (a truncated JPEG) is skipped when read, reported
once by name and counted in ``ImageFiles.skipped``; neither ever stops an epoch. Pixels are read as a viewer
shows them (:mod:`zoo.data.decode`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.datasets.folder import IMG_EXTENSIONS

from zoo.data.decode import READ_ERRORS, Source, conversions

# reasons a file is left out, as reports print them
NOT_IMAGE = "not an image (by extension)"
HIDDEN = "hidden (name starts with '.')"
UNREADABLE = "unreadable (PIL cannot identify it)"
DUPLICATE = "same file reached twice (link or alias)"
OTHER_CLASS = "link to another class's image"
OTHER_SPLIT = "link into another split's folder"
BROKEN = "broken link"
LOOP = "folder link followed before (loop or alias)"


@dataclass
class Listing:
    """Files found under a folder: ``samples`` (path, label) kept; the rest by reason: ``skipped`` files,
    ``folders`` not followed again; ``converted``: kept files whose pixels are converted, by reason."""

    samples: list[tuple[str, int]] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    converted: dict[str, list[str]] = field(default_factory=dict)
    folders: dict[str, list[str]] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)  # path -> PIL's error, for unreadable files

    def skip(self, reason: str, path: str, why: str | None = None) -> None:
        self.skipped.setdefault(reason, []).append(path)
        if why:
            self.why[path] = why

    @property
    def ignored(self) -> list[str]:
        return self.skipped.get(NOT_IMAGE, [])

    @property
    def unreadable(self) -> list[tuple[str, str]]:
        return [(p, self.why.get(p, "")) for p in self.skipped.get(UNREADABLE, [])]

    def summary(self, base: str | Path | None = None) -> list[str]:
        """Lines of the report: images kept, files skipped and converted by reason, folders not followed
        (paths relative to ``base``)."""
        total = sum(len(v) for v in self.skipped.values())
        lines = [f"{len(self.samples)} image(s) kept, {total} file(s) skipped"]
        for title, table in (
            ("skipped", self.skipped),
            ("converted", self.converted),
            ("folder", self.folders),
        ):
            for reason, paths in sorted(table.items()):
                shown = [_short(p, self.why, base) for p in paths[:3]]
                some = ", ".join(shown) + (", ..." if len(paths) > 3 else "")
                lines.append(f"  {title}: {len(paths)} {reason}: {some}")
        return lines

    def report(self, where: str | Path) -> None:
        """Print the summary (first process only); warn once when files were skipped."""
        if _rank_zero():
            print(f"Files in {where}: " + "\n".join(self.summary(where)))
        if self.skipped:
            some = "; ".join(
                f"{len(v)} {k} ({', '.join(os.path.relpath(p, where) for p in v[:3])})"
                for k, v in sorted(self.skipped.items())
            )
            warnings.warn(f"skipped file(s) under {where}: {some}", stacklevel=2)


def _short(path: str, why: dict[str, str], base: str | Path | None) -> str:
    name = os.path.relpath(path, base) if base is not None else path
    return f"{name} ({why[path]})" if path in why else name


def _rank_zero() -> bool:
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def class_dirs(directory: str | Path) -> list[str]:
    """The class folders of ``directory``: its sub-folders (or links to folders) not hidden, sorted."""
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def header_error(path: str) -> str | None:
    """Why PIL cannot identify the image ``path`` from its header, or None when it can."""
    return inspect(path)[0]


def inspect(path: str) -> tuple[str | None, list[str]]:
    """(why PIL cannot identify ``path``, or None; the conversions reading it needs), from its header."""
    try:
        with Image.open(path) as img:
            img.verify()  # PNG: checksums; verify must come first, so the header is read again below
        with Image.open(path) as img:
            found = conversions(img)
    except READ_ERRORS as err:
        return str(err) or type(err).__name__, []
    return None, found


class Walker:
    """Lists files under class folders: each folder entered and each file counted once, by real path.

    ``owners`` maps the real path of every class folder (of every split) to its (split, label), so a link
    into another class's or split's folder adds nothing.
    """

    def __init__(self, listing: Listing, check: bool, owners: dict[str, tuple[str, int]] | None = None):
        self.listing, self.check, self.owners = listing, check, owners or {}
        self.seen_dirs: set[str] = set()
        self.seen_files: set[str] = set()

    def owner(self, real: str) -> tuple[str, int] | None:
        """(split, label) of the class folder that really holds ``real``, or None (outside every class)."""
        while True:
            if real in self.owners:
                return self.owners[real]
            parent = os.path.dirname(real)
            if parent == real:
                return None
            real = parent

    def files(self, top: str, current: tuple[str, int] | None = None) -> Iterator[str]:
        """Image files under ``top`` that belong to ``current`` (split, label), sorted, each once."""
        top_real = os.path.realpath(top)
        self.seen_dirs.add(top_real)
        yield from self._walk(top, top_real, top_real, current)

    def _walk(self, folder: str, folder_real: str, top_real: str, current) -> Iterator[str]:
        listing = self.listing
        try:
            entries = sorted(os.scandir(folder), key=lambda e: (e.is_symlink(), e.name))
        except OSError as err:
            listing.skip(UNREADABLE, folder, str(err))
            return
        here = self.owner(folder_real)  # the class folder that really holds this folder's own files
        for entry in entries:
            path, link = entry.path, entry.is_symlink()
            if entry.name.startswith("."):
                listing.skip(HIDDEN, path)
                continue
            if link and not os.path.exists(path):
                listing.skip(BROKEN, path)
                continue
            real = os.path.realpath(path) if link else os.path.join(folder_real, entry.name)  # no syscall
            if entry.is_dir():
                inside = top_real == real or top_real.startswith(real + os.sep)  # a link back up
                if real in self.seen_dirs or inside:
                    listing.folders.setdefault(LOOP, []).append(path)
                    continue
                owner = self.owner(real)
                if owner is not None and owner != current:
                    listing.folders.setdefault(self._elsewhere(owner, current), []).append(path)
                    continue
                self.seen_dirs.add(real)
                yield from self._walk(path, real, top_real, current)
                continue
            owner = self.owner(os.path.dirname(real)) if link else here
            if not entry.name.lower().endswith(IMG_EXTENSIONS):
                listing.skip(NOT_IMAGE, path)
            elif owner is not None and owner != current:
                listing.skip(self._elsewhere(owner, current), path)
            elif real in self.seen_files:
                listing.skip(DUPLICATE, path)
            else:
                self.seen_files.add(real)
                if self._readable(path):
                    yield path

    @staticmethod
    def _elsewhere(owner: tuple[str, int], current) -> str:
        return OTHER_CLASS if current is not None and owner[0] == current[0] else OTHER_SPLIT

    def _readable(self, path: str) -> bool:
        if not self.check:
            return True
        why, found = inspect(path)
        if why:
            self.listing.skip(UNREADABLE, path, why)
            return False
        for reason in found:
            self.listing.converted.setdefault(reason, []).append(path)
        return True


def class_owners(splits: dict[str, str | Path], class_names: Sequence[str]) -> dict[str, tuple[str, int]]:
    """Real path of each ``SPLIT_DIR/CLASS`` folder -> (split, label); an error when two are one folder."""
    owners: dict[str, tuple[str, int]] = {}
    for split, directory in splits.items():
        for label, name in enumerate(class_names):
            folder = Path(directory) / name
            if not folder.is_dir():
                continue
            real = os.path.realpath(folder)
            if real in owners:
                other_split, other = owners[real]
                raise ValueError(
                    f"class folders {str(folder)!r} and {class_names[other]!r} of {other_split} are the same "
                    f"folder ({real}): one is a link to the other; remove the link or give it its own images"
                )
            owners[real] = (split, label)
    return owners


def list_class_folders(
    directory: str | Path,
    class_names: Sequence[str],
    check: bool = True,
    owners: dict[str, tuple[str, int]] | None = None,
    split: str = "train",
) -> Listing:
    """Images of ``directory/CLASS/**`` for each class name, labelled by its index in ``class_names``.

    ``owners`` (:func:`class_owners`) names the class folders of the other splits; by default those of
    ``directory`` only.
    """
    listing = Listing()
    owners = owners if owners is not None else class_owners({split: directory}, class_names)
    walker = Walker(listing, check, owners)
    for label, name in enumerate(class_names):
        folder = Path(directory) / name
        if folder.is_dir():
            listing.samples += [(p, label) for p in walker.files(str(folder), (split, label))]
    return listing


def list_images(directory: str | Path, check: bool = True) -> Listing:
    """Every image under ``directory`` (recursively, sorted, each once), labelled −1: the inputs of ``predict``."""
    listing = Listing()
    listing.samples = [(p, -1) for p in Walker(listing, check).files(str(directory))]
    return listing


class ImageFiles(Dataset):
    """``(transform(image), label)``, or ``(transform(image), path)`` when ``return_path``, for (path, label) pairs.

    A transform marked ``takes_source`` (the zoo's pipelines) gets a :class:`~zoo.data.decode.Source` (the
    file opened, not yet decoded, so a crop can decode a JPEG at reduced size); any other, or all when ``lazy``
    is False, gets the decoded PIL image. A file that cannot be
    decoded is warned about once by name, added to ``skipped`` (per process), and replaced by the next readable
    file of the list (``on_error="substitute"``, batches stay full) or returned as None (``"drop"``, for
    predict; :func:`collate_present` leaves it out of the batch).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: Callable | None = None,
        mode: str = "RGB",
        on_error: str = "substitute",
        return_path: bool = False,
        lazy: bool = True,
    ):
        if on_error not in ("substitute", "drop"):
            raise ValueError(f"on_error must be 'substitute' or 'drop', not {on_error!r}")
        self.samples = list(samples)
        self.transform, self.mode, self.on_error, self.return_path = transform, mode, on_error, return_path
        self.lazy = lazy
        self.skipped: set[str] = set()

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, path: str) -> Image.Image:
        """The image at ``path`` decoded in full, as a viewer shows it."""
        return Source(path, self.mode).pil()

    def __getitem__(self, i: int):
        for step in range(len(self.samples)):
            path, label = self.samples[(i + step) % len(self.samples)]
            try:
                lazy = self.lazy and getattr(self.transform, "takes_source", False)
                image = Source(path, self.mode) if lazy else self.load(path)
                x = self.transform(image) if self.transform is not None else image
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
            return x, (path if self.return_path else label)
        raise RuntimeError(f"none of the {len(self.samples)} images from {self.samples[0][0]} on is readable")


def collate_present(batch: list, shape: Sequence[int], dtype: torch.dtype = torch.uint8):
    """``default_collate`` of the items that are not None; an all-None batch gives an empty N=0 batch."""
    batch = [item for item in batch if item is not None]
    if not batch:
        return torch.zeros(0, *shape, dtype=dtype), []
    return default_collate(batch)
