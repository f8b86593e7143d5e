"""``zoo data optimize --data.root DIR --output OUT``: an image folder as litdata's chunked streaming format.

The folder is listed and split exactly as ``zoo fit`` lists and splits it (``--data.*`` options of the image-
folder module, or of a recipe's data section with ``--recipe NAME``; ``--data zoo.data.ImageNetDataModule``
for the ImageNet layout), then each split is written in parallel by ``litdata.optimize``: the files' own
bytes (JPEG or PNG, not decoded), labels, ids, and the class names. ``OUT`` may be a folder or an object
store (``s3://bucket/prefix``, with your usual credentials). Train from it with
``--data zoo.data.StreamingDataModule --data.root OUT`` (see :mod:`zoo.data.streaming`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

EPILOG = """examples:
  zoo data optimize --data.root photos --output photos_streaming
  zoo data optimize --recipe imagenet-resnet50-step --data.root /data/imagenet --output s3://my-bucket/imagenet
  zoo data optimize --data zoo.data.ImageNetDataModule --data.root /data/imagenet --output /scratch/imagenet
then: zoo fit --recipe imagenet-resnet50-step --data zoo.data.StreamingDataModule --data.root s3://my-bucket/imagenet"""

FOLDER = "zoo.data.ImageFolderDataModule"


def recipe_data(argv: list[str]) -> list[str]:
    """``--recipe NAME`` / ``--config FILE`` → ``--data <that file's data section>``, placed first."""
    import yaml

    from recipes.catalog import recipe_path

    out, front = [], []
    i = 0
    while i < len(argv):
        key, eq, value = argv[i].partition("=")
        if key in ("--recipe", "--config"):
            if not eq:
                if i + 1 >= len(argv):
                    raise Refused(f"{key} needs a value")
                value, i = argv[i + 1], i + 1
            path = recipe_path(value) if key == "--recipe" else value
            with open(path) as f:
                section = (yaml.safe_load(f) or {}).get("data")
            if not isinstance(section, dict) or "class_path" not in section:
                raise Refused(f"{value} has no data section with a class_path")
            front = ["--data", json.dumps(section)]
        else:
            out.append(argv[i])
        i += 1
    if not front and "--data" not in out and not any(a.startswith("--data=") for a in out):
        front = ["--data", FOLDER]
    return front + out


class Refused(Exception):
    """A mistake in the command line; the message says what to do."""


def optimize(argv: list[str]) -> int:
    try:
        return _optimize(argv)
    except Refused as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _optimize(argv: list[str]) -> int:
    from jsonargparse import ArgumentParser

    from recipes.command_args import switch_values
    from recipes.options import option_hint
    from zoo.data.folder import ImageFolderDataModule
    from zoo.data.streaming import exists, write_streaming

    parser = ArgumentParser(
        prog="zoo data optimize",
        description="Write an image folder (its train/val/test split as zoo fit makes it) in litdata's "
        "chunked format, for zoo.data.StreamingDataModule.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        exit_on_error=False,  # a mistake is one `error:` line (the zoo command's), not the usage
        allow_abbrev=False,  # --out is not a second spelling of --output
    )
    parser.add_subclass_arguments(ImageFolderDataModule, "data", help="the image folder and how to split it")
    parser.add_argument("--output", required=True, help="folder or s3://bucket/prefix to write")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1, help="processes writing")
    parser.add_argument("--chunk_bytes", default="64MB", help="size of each chunk file")
    parser.add_argument(
        "--overwrite", type=bool, default=False, help="replace a data set already at --output (alone: true)"
    )
    parser.add_argument(
        "--storage_options", type=dict, default={}, help="options of the object store's client"
    )
    try:
        cfg = parser.parse_args(switch_values(recipe_data(argv), {"--overwrite"}))
    except argparse.ArgumentError as err:
        err.zoo_hint = option_hint(err, [parser])
        raise
    if exists(cfg.output, cfg.storage_options) and not cfg.overwrite:
        raise Refused(f"{cfg.output} already holds a streaming data set; give --overwrite true to replace it")
    if cfg.data.init_args.get("root") is None:
        raise Refused("give --data.root, the image folder to convert")
    try:
        datamodule = parser.instantiate_classes(cfg).data
    except (ValueError, FileNotFoundError) as err:
        raise Refused(str(err.__cause__ or err)) from None
    if not isinstance(datamodule, ImageFolderDataModule):
        raise Refused(f"{type(datamodule).__name__} is not an image folder; give --data.root DIR")
    datamodule.setup("fit")
    start = time.perf_counter()
    meta = write_streaming(datamodule, cfg.output, cfg.num_workers, cfg.chunk_bytes, cfg.storage_options)
    total = sum(s["count"] for s in meta["splits"].values())
    seconds = time.perf_counter() - start
    parts = ", ".join(f"{name} {split['count']}" for name, split in meta["splits"].items())
    classes = len(meta["class_names"])
    print(
        f"Wrote {total} images ({parts}) of {classes} classes to {cfg.output} "
        f"in {seconds:.1f} s with {cfg.num_workers} processes"
    )
    print(f"Train from it: --data zoo.data.StreamingDataModule --data.root {cfg.output}")
    return 0


COMMANDS = {"optimize": optimize}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(
            "usage: zoo data optimize --data.root DIR --output OUT  (zoo data optimize --help for every option)"
        )
        return 0
    if argv[0] not in COMMANDS:
        print(
            f"error: unknown command 'zoo data {argv[0]}'; the commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    return COMMANDS[argv[0]](argv[1:])
