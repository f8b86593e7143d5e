"""``zoo check-data PATH``: what training on a folder of images would read, without training.

Examples:
zoo check-data photos/                         # classes, images per split, skipped and converted files
zoo check-data photos/ --data.val_fraction 0.1 --data.test_fraction 0 --data.seed 3
zoo check-data photos/ --hash false --decode false   # headers only: fast on a large folder
zoo check-data photos/ --labels                # and the images whose folder looks wrong (pretrained features)

Lists the folder as ``ImageFolderDataModule`` does (same listing, same stratified split), decodes every image
(a truncated file shows only then) and hashes every file, to find identical images in two splits (a leak
that inflates validation and test scores). ``--labels`` also ranks the images that look mislabeled and finds
near-copies filed under two classes (:mod:`recipes.commands.check_labels`). Exit 0 when the folder can be trained
on; 2, with one line naming the problem, when it cannot. Imports neither Lightning nor, without ``--labels``, the
model code.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections import defaultdict
from pathlib import Path

from recipes.command_args import CommandParser, parse
from recipes.commands import check_labels
from zoo.data.decode import READ_ERRORS, Source
from zoo.data.files import OTHER_SPLIT, class_dirs, class_owners, list_class_folders
from zoo.data.split import stratified_split
from zoo.errors import ZooError

VAL_DIRS = ("val", "valid", "validation")  # as ImageFolderDataModule reads them


class Unusable(ZooError):
    """The folder cannot be trained on; the message says why and what to do (exit 2)."""


def layout(root: Path) -> dict[str, Path]:
    """The split folders of ``root``: ``{"train": ...}`` plus ``val``/``test`` when it has them."""
    if not root.is_dir():
        raise Unusable(f"{str(root)!r} does not exist or is not a folder")
    train = root / "train"
    others = {"val": next((root / d for d in VAL_DIRS if (root / d).is_dir()), None), "test": root / "test"}
    if not train.is_dir():
        if any(d is not None and d.is_dir() for d in others.values()):
            raise Unusable(f"{root} has val/ or test/ folders but no train/ folder")
        return {"train": root}
    return {"train": train} | {k: d for k, d in others.items() if d is not None and d.is_dir()}


def survey(root: Path, val_fraction: float, test_fraction: float, seed: int, mode: str = "RGB") -> dict:
    """Classes, listings per split folder and the samples of each split, as the data module makes them."""
    folders = layout(root)
    classes = class_dirs(folders["train"])
    if not classes:
        raise Unusable(f"no class folders in {str(folders['train'])!r}: expected CLASS_NAME/IMAGE.jpg")
    for d in folders.values():
        extra = sorted(set(class_dirs(d)) - set(classes))
        if extra:
            raise Unusable(f"{d} has class folders {extra} that {folders['train']} does not have")
    try:
        owners = class_owners(folders, classes)
    except ValueError as err:
        raise Unusable(str(err)) from None
    listings = {name: list_class_folders(d, classes, True, owners, name) for name, d in folders.items()}
    train = listings["train"].samples
    counts = [sum(1 for _, y in train if y == k) for k in range(len(classes))]
    if 0 in counts:
        empty = classes[counts.index(0)]
        raise Unusable(
            f"class folder {str(folders['train'] / empty)!r} holds no readable images; "
            "add images (.jpg, .png, ...) or remove the folder"
        )
    val = 0.0 if "val" in folders else val_fraction
    test = 0.0 if "test" in folders else test_fraction
    try:
        idx = stratified_split([y for _, y in train], val, test, seed)
    except ValueError as err:
        raise Unusable(
            f"cannot split the {len(train)} images by class ({err}); change --val_fraction / --test_fraction, "
            "add images, or add val/ and test/ folders"
        ) from None
    splits = {name: [train[i] for i in ids] for name, ids in idx.items()}
    splits |= {name: listings[name].samples for name in ("val", "test") if name in listings}
    splits = {name: splits[name] for name in ("train", "val", "test") if splits.get(name)}
    return {"classes": classes, "folders": folders, "listings": listings, "splits": splits}


def decode_errors(splits: dict[str, list], mode: str = "RGB") -> dict[str, str]:
    """path -> error for every listed image that fails to decode in full."""
    errors = {}
    for samples in splits.values():
        for path, _ in samples:
            try:
                Source(path, mode).pil()
            except READ_ERRORS as err:
                errors[path] = str(err) or type(err).__name__
    return errors


def same_content(splits: dict[str, list]) -> list[list[tuple[str, str]]]:
    """Groups of (split, path) whose files hold the same bytes (BLAKE2b), two or more per group."""
    groups = defaultdict(list)
    for split, samples in splits.items():
        for path, _ in samples:
            with open(path, "rb") as f:
                groups[hashlib.file_digest(f, "blake2b").hexdigest()].append((split, path))
    return [g for g in groups.values() if len(g) > 1]


def report(info: dict, errors: dict[str, str] | None, groups: list | None, root: Path) -> list[str]:
    """The lines ``zoo check-data`` prints."""
    classes, splits, listings = info["classes"], info["splits"], info["listings"]
    rel = lambda p: os.path.relpath(p, root)  # noqa: E731
    lines = [f"Classes: {len(classes)} ({', '.join(classes[:20])}{', ...' if len(classes) > 20 else ''})"]
    names = list(splits)
    width = max(len(c) for c in [*classes, "total"])
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{n:>6}" for n in names))
    for k, c in enumerate(classes):
        row = [sum(1 for _, y in splits[n] if y == k) for n in names]
        lines.append(f"{c:<{width}}  " + "  ".join(f"{v:>6}" for v in row))
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{len(splits[n]):>6}" for n in names))
    for name, listing in listings.items():
        lines.append(f"Files in {rel(info['folders'][name])}/: " + "\n".join(listing.summary(root)))
    if errors is None:
        lines.append("Decoding: not checked (--decode false)")
    else:
        shown = ", ".join(f"{rel(p)} ({e})" for p, e in list(errors.items())[:3])
        lines.append(
            f"Decoding: {len(errors)} image(s) fail to decode, skipped when read"
            + (f": {shown}" if errors else "")
        )
    linked = sum(len(ls.skipped.get(OTHER_SPLIT, [])) for ls in listings.values())
    lines.append(f"Duplicates across splits: {linked} link(s) to a file of another split (not counted twice)")
    if groups is None:
        lines.append("Duplicates by content: not checked (--hash false)")
    else:
        across = [g for g in groups if len({s for s, _ in g}) > 1]
        lines.append(
            f"Duplicates by content: {len(groups)} group(s) of identical files, {len(across)} across splits"
        )
        for g in across[:5]:
            lines.append("  " + " = ".join(f"{s} {rel(p)}" for s, p in g))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        "check-data",
        "What training on a folder of images would read, without training.",
        "\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("path", help="the data root: class folders, or train/ val/ test/ folders of them")
    data = parser.add_argument_group("the split, with zoo fit's options of the image folder")
    for name, kind, default, what in (
        ("val_fraction", float, 0.2, "share of each class held out for validation"),
        ("test_fraction", float, 0.1, "share of each class held out for test"),
        ("seed", int, 0, "seed of the split"),
    ):
        data.add_argument(
            f"--data.{name}", dest=name, type=kind, default=default, metavar="X", help=f"{what} ({default})"
        )
    data.add_argument(
        "--data.channels", dest="channels", type=int, choices=(1, 3), default=3, help="1: grey (3)"
    )
    parser.add_switch("--decode", "false: read headers only, do not decode every image", default=True)
    parser.add_switch("--hash", "false: do not compare file contents", default=True)
    check_labels.add_arguments(parser)
    args, _ = parse(parser, argv, recipe=False)
    root = Path(args.path)
    mode = "L" if args.channels == 1 else "RGB"
    info = survey(root, args.val_fraction, args.test_fraction, args.seed, mode)  # Unusable: one error line
    errors = decode_errors(info["splits"], mode) if args.decode or args.labels else None
    groups = same_content(info["splits"]) if args.hash else None
    print(f"Data root: {root}")
    print("\n".join(report(info, errors, groups, root)))
    train = info["splits"]["train"]
    for k, name in enumerate(info["classes"]):
        if all(path in (errors or {}) for path, y in train if y == k):
            raise Unusable(f"no image of class {name!r} in the training split decodes; add readable images")
    readable = sum(len(s) for s in info["splits"].values()) - len(errors or {})
    if args.labels:
        samples = [s for split in info["splits"].values() for s in split if s[0] not in errors]
        check_labels.run(args, samples, info["classes"], root, mode)
    print(f"OK: {readable} readable image(s) in {len(info['classes'])} classes can be trained on")
    return 0
