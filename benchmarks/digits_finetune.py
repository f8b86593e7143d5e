"""Fine-tuning where there is enough data to fine-tune: scikit-learn's digits as a folder of real photos.

    .venv/bin/python benchmarks/digits_finetune.py [--per-class 100] [--seed 0]

The 1,797 real 8×8 handwritten digits of ``sklearn.datasets.load_digits`` are written as grey PNG files: 100 per
class (drawn with the seed) to ``train/``, the other 797 to ``test/``. Then, in a fresh process each, the
finetune recipe with the ImageNet EfficientNet-Lite0 weights and one strategy each: ``linear`` (the probe
alone), ``freeze_unfreeze`` (probe, then the whole network), ``full``, and ``auto`` (the recipe's default, which
must pick the best or come within a point of it). Writes benchmarks/results/digits_finetune.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from zoo_run import machine, write_results, zoo_fit

HERE = Path(__file__).parent
STRATEGIES = ("linear", "freeze_unfreeze", "full", "auto")
SAID = ("Fine-tuning strategy auto", "Budget:", "Linear probe:", "Fine-tuning auto")


def write_folder(root: Path, per_class: int, seed: int) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype("uint8")
    rng = np.random.default_rng(seed)
    for c in range(10):
        ids = np.flatnonzero(digits.target == c)
        train = set(rng.choice(ids, per_class, replace=False).tolist())
        for i in ids:
            folder = root / ("train" if i in train else "test") / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits"
        write_folder(data, args.per_class, args.seed)
        for strategy in args.strategies:
            cwd = Path(tmp) / strategy
            cwd.mkdir()
            options = ["--recipe", "finetune", "--data.root", str(data)]
            options += ["--model.pretrained_path", "efficientnet-lite0-pypi", "--finetune.strategy", strategy]
            runs[strategy] = zoo_fit(options, cwd, SAID)
            print(strategy, json.dumps(runs[strategy]), flush=True)
    summary = {
        "data": f"sklearn digits as 8×8 grey PNGs: {args.per_class} per class to train (seed {args.seed}), "
        "the rest to test",
        "machine": machine(),
        "runs": runs,
    }
    write_results("digits_finetune", summary, markdown(summary))


def markdown(s: dict) -> str:
    lines = [
        "# Fine-tuning strategies on a medium set (sklearn digits as an image folder)",
        "",
        f"{s['data']}; {s['machine']}. `zoo fit --recipe finetune --data.root DIR --model.pretrained_path "
        "efficientnet-lite0-pypi --finetune.strategy S`, nothing else. Wall time: process start to the end of "
        "the final test.",
        "",
        "| strategy | test top-1 | wall | budget |",
        "|---|---:|---:|---|",
    ]
    for name, r in s["runs"].items():
        budget = r["said"]["Budget:"].replace("Budget: ", "")
        lines.append(f"| {name} | {r['test_top1']:.4f} | {r['wall_s']:.0f} s | {budget} |")
    auto = s["runs"].get("auto")
    if auto:
        lines += ["", "`auto` said:", ""]
        lines += [
            f"- {line}" for key in SAID if key.startswith("Fine-tuning") and (line := auto["said"][key])
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
