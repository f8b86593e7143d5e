"""Streaming benchmark: images/s of ``StreamingDataModule`` (litdata chunks) next to ``ImageFolderDataModule``.

    .venv/bin/python benchmarks/streaming.py [--images 640 --repeats 5 --workers 2 --batch 64]

Both read the same JPEGs (500×375 crops of scikit-learn's two sample photos): the folder module from the
files, the streaming module from the chunks ``zoo data optimize`` wrote of them on the same local disk. Both
train-loaders use the same data-module options (RandomResizedCrop 224, flips, ImageNet mean/std, 2 workers,
batches of 64) and deliver the same batches; each batch goes through the module's ``on_after_batch_transfer``
and is read once (a sum), as a training step reads it. The streaming loader starts its workers anew each epoch
(litdata's new order per epoch); that cost is counted.

Each repeat times one whole epoch of each side, alternately; the figure is the median over repeats. Also
timed: ``zoo data optimize`` itself (images written per second). Writes benchmarks/results/streaming.json and
streaming.md; prints one table row per figure (figure, streaming, image folder, ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).parent
OPTIONS = {
    "image_size": 224,
    "preprocess": "imagenet",
    "interpolation": "bilinear",
    "crop": "random_resized",
}


def make_folder(root: Path, images: int, size: tuple[int, int] = (500, 375), classes: int = 4) -> Path:
    """``images`` JPEGs of ``size`` (w, h), random crops of the two sample photos, in ``classes`` folders."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(0)
    for i in range(images):
        photo = photos[i % 2]
        w, h = photo.size
        s = rng.uniform(0.5, 1.0)
        cw, ch = int(w * s), int(h * s)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        photo.crop((x, y, x + cw, y + ch)).resize(size, Image.BILINEAR).save(
            folder / f"{i:05d}.jpg", quality=90
        )
    return root


def modules(root: Path, out: Path, batch: int, workers: int) -> tuple[dict, float]:
    """The two data modules over the same images (every image in the training split), and the seconds
    ``zoo data optimize`` took to write ``out``."""
    from recipes.cli import main as zoo
    from zoo.data.folder import ImageFolderDataModule
    from zoo.data.streaming import StreamingDataModule

    split = ["--data.val_fraction", "0", "--data.test_fraction", "0", "--data.check_images", "false"]
    start = time.perf_counter()
    code = zoo(["data", "optimize", "--data.root", str(root), "--output", str(out), *split])
    seconds = time.perf_counter() - start
    assert code == 0, "zoo data optimize failed"
    common = {**OPTIONS, "batch_size": batch, "num_workers": workers}
    folder = ImageFolderDataModule(
        str(root), val_fraction=0.0, test_fraction=0.0, check_images=False, **common
    )
    stream = StreamingDataModule(str(out), **common)
    for dm in (folder, stream):
        dm.setup("fit")
    return {"streaming": stream, "image folder": folder}, seconds


def epoch(dm, loader) -> tuple[int, float]:
    """(images, seconds) of one pass over ``loader``, each batch through the module's hook and read once."""
    start, n = time.perf_counter(), 0
    for b in loader:
        x = dm.on_after_batch_transfer(b, 0)[0]
        x.sum(dtype=torch.float32)
        n += len(x)
    return n, time.perf_counter() - start


def measure(root: Path, out: Path, batch: int = 64, workers: int = 2, repeats: int = 5) -> dict:
    """Median images/s of each loader over ``repeats`` interleaved epochs, and the optimize time."""
    dms, optimize_s = modules(root, out, batch, workers)
    loaders = {name: dm.train_dataloader() for name, dm in dms.items()}
    for name, loader in loaders.items():
        epoch(dms[name], loader)  # warm the page cache (and start the folder's persistent workers)
    rates = {name: [] for name in loaders}
    images = {}
    for _ in range(repeats):
        for name, loader in loaders.items():
            n, seconds = epoch(dms[name], loader)
            rates[name].append(n / seconds)
            images[name] = n
    medians = {name: statistics.median(r) for name, r in rates.items()}
    total = len(dms["image folder"].splits["train"])
    return {
        "images_per_s": medians,
        "repeats": rates,
        "images_per_epoch": images,
        "ratio": medians["streaming"] / medians["image folder"],
        "optimize_s": optimize_s,
        "optimize_images_per_s": total / optimize_s,
        "optimized_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6,
        "jpeg_mb": sum(f.stat().st_size for f in root.rglob("*.jpg")) / 1e6,
    }


def rows(result: dict) -> list[str]:
    """The table rows: figure, streaming, image folder (same run), ratio."""
    ips = result["images_per_s"]
    ref = ips["image folder"]
    return [
        f"| training loader, images/s (local disk, RandomResizedCrop 224) | {ips['streaming']:.0f} | {ref:.0f} | "
        f"{ips['streaming'] / ref:.2f} |",
        f"| bytes on disk, MB (chunks vs JPEG files) | {result['optimized_mb']:.1f} | {result['jpeg_mb']:.1f} | "
        f"{result['optimized_mb'] / result['jpeg_mb']:.2f} |",
    ]


def machine() -> str:
    import litdata
    import PIL

    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, torch "
        f"{torch.__version__}, litdata {litdata.__version__}, Pillow {PIL.__version__}, no GPU"
    )


def write(result: dict, args: argparse.Namespace, out: Path) -> None:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    summary = {"date": date.today().isoformat(), "machine": machine(), **settings, **result}
    out.mkdir(parents=True, exist_ok=True)
    (out / "streaming.json").write_text(json.dumps(summary, indent=2) + "\n")
    reps = result["repeats"]
    (out / "streaming.md").write_text(
        "# Streaming loader (litdata) vs image-folder loader\n\n"
        f"{summary['date']}, {summary['machine']}. {args.images} JPEGs of 500×375, the same data-module "
        f"options on both sides (RandomResizedCrop 224, flips, ImageNet mean/std), {args.workers} workers, batch "
        f"{args.batch}; medians of {args.repeats} interleaved epochs, each batch normalised by the module's "
        "`on_after_batch_transfer` and read once. Both read a warm local disk: the streaming format's gain is on "
        "file systems and object stores where opening a million small files is the bottleneck, which one "
        "machine's page cache does not show.\n\n"
        "| figure | streaming | image folder | ratio |\n|---|---:|---:|---:|\n"
        + "\n".join(rows(result))
        + f"\n\n`zoo data optimize` wrote the {args.images} images in {result['optimize_s']:.1f} s "
        f"({result['optimize_images_per_s']:.0f} images/s with {os.cpu_count()} processes, command start-up "
        "included). Every repeat (images/s): "
        + "; ".join(f"{name} " + ", ".join(f"{r:.0f}" for r in reps[name]) for name in reps)
        + ".\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder of streaming.json / .md")
    parser.add_argument("--no-write", action="store_true", help="print the table rows only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "jpegs", args.images)
        result = measure(root, Path(tmp) / "optimized", args.batch, args.workers, args.repeats)
    if not args.no_write:
        write(result, args, args.out)
    print("\n".join(rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
