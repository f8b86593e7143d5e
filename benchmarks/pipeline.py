"""Input pipeline benchmark: images/s of the zoo's image-folder loader next to torchvision's reference.

    .venv/bin/python benchmarks/pipeline.py [--images 640 --repeats 5 --workers 2 --batch 64]

Both sides read the same folder of 500×375 JPEGs (crops of scikit-learn's two sample photos) with
RandomResizedCrop 224 and horizontal flips, 2 loader workers and batches of 64, and end with normalised
float32 batches on the CPU:

- reference: ``ImageFolder`` + PIL + ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize`` (torchvision's classification reference);
- zoo: ``ImageFolderDataModule``'s training loader (the crop drawn before decoding, uint8 tensors) and its
  ``on_after_batch_transfer`` (the normalisation, here on the CPU, in the main process); and the loader alone,
  as a GPU run uses it (uint8 batches to the device, normalised there).

Every batch is read once at the end (a sum), as a training step or the copy to a GPU reads it.

Each repeat times one whole epoch of each side, alternately (workers already started); the figure is the
median over repeats. Writes benchmarks/results/pipeline.json and pipeline.md.
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
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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


def reference_loader(root: Path, size: int, batch: int, workers: int):
    """torchvision's reference pipeline (references/classification/train.py, ``ClassificationPresetTrain``)."""
    from torchvision import datasets, transforms

    t = transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    ds = datasets.ImageFolder(str(root), t)
    return torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    ), (lambda b: b)


def zoo_loader(root: Path, size: int, batch: int, workers: int):
    """The zoo's training loader of ``root`` (every image in the training split) and its batch hook."""
    from zoo.data import ImageFolderDataModule

    dm = ImageFolderDataModule(
        str(root),
        image_size=size,
        val_fraction=0.0,
        test_fraction=0.0,
        preprocess="imagenet",
        interpolation="bilinear",
        batch_size=batch,
        num_workers=workers,
        check_images=False,
    )
    dm.setup("fit")
    return dm.train_dataloader(), (lambda b: dm.on_after_batch_transfer(b, 0))


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(loader) -> float | None:
    """CPU seconds used so far by this process and ``loader``'s worker processes (None without /proc)."""
    workers = getattr(getattr(loader, "_iterator", None), "_workers", [])
    try:
        return time.process_time() + sum(_proc_cpu(w.pid) for w in workers)
    except OSError:
        return None


def epoch(loader, finish) -> tuple[int, float, torch.Tensor, float | None]:
    """(images, seconds, last batch, CPU seconds of every process involved) of one pass over ``loader``, each
    batch through ``finish`` and then read once, as a training step (or the copy to a GPU) reads it."""
    cpu, start, n, x = cpu_seconds(loader), time.perf_counter(), 0, None
    for b in loader:
        x = finish(b)[0]
        x.sum(dtype=torch.float32)
        n += len(x)
    seconds, after = time.perf_counter() - start, cpu_seconds(loader)
    return n, seconds, x, None if cpu is None or after is None else after - cpu


def measure(root: Path, size: int = 224, batch: int = 64, workers: int = 2, repeats: int = 5) -> dict:
    """Median images/s and CPU milliseconds per image (all processes: the main one and the loader workers) of
    each side over ``repeats`` interleaved epochs, and what each side delivered.

    ``zoo`` ends with the batch normalised on the CPU by the training process (a CPU run); ``zoo uint8`` with
    the uint8 batch as it leaves the loader (a GPU run, where the normalisation runs on the device). The CPU
    time hardly depends on what else the machine runs; images/s does."""
    loader, finish = zoo_loader(root, size, batch, workers)
    sides = {
        "zoo": (loader, finish),
        "zoo uint8": (loader, lambda b: b),
        "torchvision": reference_loader(root, size, batch, workers),
    }
    for loader, finish in sides.values():
        epoch(loader, finish)  # start the workers, warm the page cache
    rates = {name: [] for name in sides}
    cpu_ms = {name: [] for name in sides}
    shapes = {}
    for _ in range(repeats):
        for name, (loader, finish) in sides.items():
            n, seconds, x, cpu = epoch(loader, finish)
            rates[name].append(n / seconds)
            if cpu is not None:
                cpu_ms[name].append(1000 * cpu / n)
            shapes[name] = {
                "images": n,
                "shape": list(x.shape[1:]),
                "dtype": str(x.dtype).replace("torch.", ""),
            }
    medians = {name: statistics.median(r) for name, r in rates.items()}
    ref = medians["torchvision"]
    paired = {  # each repeat's sides ran back to back: their ratio cancels the machine's slower minutes
        name: statistics.median(z / t for z, t in zip(rates[name], rates["torchvision"])) for name in rates
    }
    cpu = {name: statistics.median(v) for name, v in cpu_ms.items() if v}
    return {
        "images_per_s": medians,
        "per_repeat": rates,
        "cpu_ms_per_image": cpu,
        "cpu_ms_per_repeat": cpu_ms,
        "delivered": shapes,
        "ratio": medians["zoo"] / ref,
        "ratio_uint8": medians["zoo uint8"] / ref,
        "median_repeat_ratio": {k: v for k, v in paired.items() if k != "torchvision"},
    }


def rows(result: dict) -> list[str]:
    """The table rows: figure, zoo, torchvision reference (same run), ratio (zoo's advantage)."""
    ips, ref = result["images_per_s"], result["images_per_s"]["torchvision"]
    out = [
        f"| input pipeline, images/s, normalised on the CPU (target ≥ 1.3×) | {ips['zoo']:.0f} | {ref:.0f} | "
        f"{ips['zoo'] / ref:.2f} |",
        f"| input pipeline, images/s, uint8 to the device (GPU runs) | {ips['zoo uint8']:.0f} | {ref:.0f} | "
        f"{ips['zoo uint8'] / ref:.2f} |",
    ]
    cpu = result.get("cpu_ms_per_image") or {}
    if "torchvision" in cpu:
        t = cpu["torchvision"]
        out += [
            f"| input pipeline, CPU ms per image (all processes), normalised on the CPU | {cpu['zoo']:.2f} | "
            f"{t:.2f} | {t / cpu['zoo']:.2f} |",
            f"| input pipeline, CPU ms per image (all processes), uint8 to the device | {cpu['zoo uint8']:.2f} | "
            f"{t:.2f} | {t / cpu['zoo uint8']:.2f} |",
        ]
    return out


def machine() -> str:
    import PIL
    import torchvision

    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f} from other "
        f"processes at the start), Python {platform.python_version()}, torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, Pillow {PIL.__version__}, no GPU"
    )


def write(result: dict, args: argparse.Namespace, out: Path, where: str) -> None:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    summary = {"date": date.today().isoformat(), "machine": where, **settings, **result}
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2) + "\n")
    reps, paired = result["per_repeat"], result["median_repeat_ratio"]
    (out / "pipeline.md").write_text(
        "# Input pipeline: zoo vs torchvision's reference\n\n"
        f"{summary['date']}, {summary['machine']}. {args.images} JPEGs of {args.source[0]}×{args.source[1]}, "
        f"RandomResizedCrop {args.crop} + flip, {args.workers} workers, batch {args.batch}; medians of "
        f"{args.repeats} interleaved epochs. The reference's batches leave its workers normalised (float32); the "
        "zoo's leave them as uint8 and are normalised by the data module's `on_after_batch_transfer`: on the CPU "
        "in the training process (first row), or on the GPU (second row: the loader alone). The CPU time per "
        "image adds up the training process and the loader workers; unlike images/s it hardly depends on what "
        "else the machine runs (ratio: torchvision's CPU time / the zoo's).\n\n"
        "| figure | zoo | torchvision reference | ratio |\n|---|---:|---:|---:|\n"
        + "\n".join(rows(result))
        + "\n\nEvery repeat (images/s): "
        + "; ".join(f"{name} " + ", ".join(f"{r:.0f}" for r in reps[name]) for name in reps)
        + ". Median of the repeats' own ratios (each repeat's sides ran back to back): "
        + ", ".join(f"{name} {r:.2f}" for name, r in paired.items())
        + ".\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--crop", type=int, default=224, help="output side of the random resized crop")
    parser.add_argument("--source", type=int, nargs=2, default=[500, 375], help="JPEG width and height")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder of pipeline.json / .md")
    parser.add_argument("--no-write", action="store_true", help="print the table row only")
    args = parser.parse_args(argv)
    where = machine()  # before the run loads the machine itself
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "jpegs", args.images, tuple(args.source))
        result = measure(root, args.crop, args.batch, args.workers, args.repeats)
    if not args.no_write:
        write(result, args, args.out, where)
    print("\n".join(rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
