"""Fine-tuning where there is enough data to fine-tune: scikit-learn's digits as a folder of real photos.

    .venv/bin/python benchmarks/digits_finetune.py [--per-class 100] [--seed 0] [--baseline TREE] [--bf16]

The 1,797 real 8×8 handwritten digits of ``sklearn.datasets.load_digits`` are written as grey PNG files: 100 per
class (drawn with the seed) to ``train/``, the other 797 to ``test/``. Then, in a fresh process each, the
finetune recipe with the ImageNet EfficientNet-Lite0 weights and one strategy each: ``linear`` (the probe
alone), ``freeze_unfreeze`` (probe, then the whole network), ``full``, and ``auto`` (the recipe's default, which
must pick the best or come within a point of it), each timed by phase (:mod:`phase_clock`). ``--baseline TREE``
runs ``auto`` once more with the code of another checkout (``git worktree add TREE COMMIT``), right after this
one's, for a side-by-side of two commits on the same machine; ``--bf16`` runs ``auto`` with
``--trainer.precision bf16-mixed`` too. Writes benchmarks/results/digits_finetune.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from zoo_run import machine, page, write_results, zoo_fit

HERE = Path(__file__).parent
STRATEGIES = ("linear", "freeze_unfreeze", "full", "auto")
SAID = (
    "Fine-tuning strategy auto",
    "Budget:",
    "Linear probe:",
    "Fine-tuning auto",
    "Fine-tuning stopped",
    "Run length",
)


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


def markdown(s: dict) -> str:
    lines = page(
        "Fine-tuning strategies on a medium set (sklearn digits as an image folder)",
        f"{s['data']}; {s['machine']}. `zoo fit --recipe finetune --data.root DIR --model.pretrained_path "
        "efficientnet-lite0-pypi --finetune.strategy S`, nothing else. Wall time: process start to the end of "
        "the final test; phases in seconds (set-up: listing the images and the label check's feature pass, which "
        "the probe reuses; fit start: the probe's fit).",
        [
            "run",
            "test top-1",
            "wall",
            "set-up",
            "fit start",
            "training",
            "validation",
            "end of fit",
            "test",
            "budget",
        ],
    )
    lines[-1] = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for name, r in s["runs"].items():
        budget = r["said"]["Budget:"].replace("Budget: ", "")
        p = r.get("phases") or {}
        cells = " | ".join(
            f"{p[k]:.0f}" if k in p else ""
            for k in ("setup", "fit_start", "training", "validation", "fit_end", "test")
        )
        lines.append(f"| {name} | {r['test_top1']:.4f} | {r['wall_s']:.0f} s | {cells} | {budget} |")
    auto = s["runs"].get("auto")
    if auto:
        lines += ["", "`auto` said:", ""]
        lines += [
            f"- {line}"
            for key in SAID
            if key.startswith(("Fine-tuning", "Run")) and (line := auto["said"][key])
        ]
    base = s["runs"].get("auto, baseline commit")
    if auto and base:
        lines += ["", f"`auto` against the baseline commit ({s['baseline']}), one after the other: wall "
                  f"{auto['wall_s']:.0f} s against {base['wall_s']:.0f} s ({auto['wall_s'] / base['wall_s']:.2f}×), "
                  f"test top-1 {auto['test_top1']:.4f} against {base['test_top1']:.4f}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--baseline", type=Path, help="a checkout of another commit: its auto runs too")
    parser.add_argument("--bf16", action="store_true", help="auto with --trainer.precision bf16-mixed too")
    args = parser.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "digits"
        write_folder(data, args.per_class, args.seed)
        options = [
            "--recipe",
            "finetune",
            "--data.root",
            str(data),
            "--model.pretrained_path",
            "efficientnet-lite0-pypi",
        ]
        plan = [(s, ["--finetune.strategy", s], None) for s in args.strategies]
        if args.baseline:
            plan.append(("auto, baseline commit", ["--finetune.strategy", "auto"], args.baseline))
        if args.bf16:
            plan.append(
                (
                    "auto, bf16-mixed",
                    ["--finetune.strategy", "auto", "--trainer.precision", "bf16-mixed"],
                    None,
                )
            )
        for name, extra, tree in plan:
            cwd = Path(tmp) / name.replace(" ", "_").replace(",", "")
            runs[name] = zoo_fit([*options, *extra], cwd, SAID, phases=tree is None, tree=tree)
            print(name, json.dumps(runs[name]), flush=True)
    summary = {
        "data": f"sklearn digits as 8×8 grey PNGs: {args.per_class} per class to train (seed {args.seed}), "
        "the rest to test",
        "machine": machine(),
        "baseline": str(args.baseline) if args.baseline else None,
        "runs": runs,
    }
    write_results("digits_finetune", summary, markdown(summary))


if __name__ == "__main__":
    main()
