"""What test-time augmentation gives: test top-1 and loss with and without ``zoo test --tta``, on real data that
ships offline, for the fine-tuning recipe and a CIFAR-style recipe.

    .venv/bin/python benchmarks/tta.py [--only finetune cifar]

- fine-tuning: scikit-image's ``lfw_subset`` (25×25 grey photos, faces vs non-faces: a mirror keeps the class),
  10 + 10 photos to train (seed 0, as benchmarks/lfw_finetune.py), the other 180 to test;
  ``zoo fit --recipe finetune --model.pretrained_path efficientnet-lite0-pypi`` (ImageNet EfficientNet-Lite0
  from the PyPI package), then ``zoo test --ckpt_path CKPT --tta MODE`` for each mode.
- CIFAR-style: scikit-learn's digits written as CIFAR-10's python files (8×8 upscaled to 32×32 RGB; 1,297 to
  train and validate, 500 to test); ``zoo fit --recipe cifar10-resnet56`` shortened for a 2-core CPU (a small
  convnet, 8 epochs, the decays at 5 and 7), the recipe's pad-and-crop training and crop_pct 1 evaluation kept.
  Digits are not flip-invariant: ``--tta flip`` is refused (the message is recorded), and measured once with
  ``--data.flip_invariant true`` to show what the refusal avoids.

Every command runs in a fresh process, as a user runs it; the figures are read from the run's ``metrics.csv``.
Writes benchmarks/results/tta.json and tta.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
from lfw_finetune import write_folder
from PIL import Image
from zoo_run import machine, run_zoo

HERE = Path(__file__).parent
MODES = {"finetune": ["none", "flip", "crops", "flip+crops", "scales"], "cifar": ["none", "crops", "scales"]}
FINETUNE = [
    "--recipe",
    "finetune",
    "--model.pretrained_path",
    "efficientnet-lite0-pypi",
    "--data.num_workers",
    "0",
]
CIFAR = [
    "--recipe", "cifar10-resnet56", "--data.download", "false", "--data.check_md5", "false",
    "--data.num_workers", "0", "--data.flip_invariant", "false", "--trainer.precision", "32-true",
]  # fmt: skip
CIFAR_FIT = [
    "--model.arch", "convnet", "--model.model_kwargs", "{widths: [16, 32], depth: 2}",
    "--model.channels_last", "false", "--trainer.max_epochs", "8", "--trainer.callbacks.milestones", "[5, 7]",
    "--data.batch_size", "64",
]  # fmt: skip


def write_digits_cifar(root: Path, test: int = 500) -> Path:
    """sklearn's digits as CIFAR-10's files (``cifar-10-batches-py``): rows of 3072 bytes (R, G, B planes of 32×32)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def rows(ids):
        images = [
            Image.fromarray((digits.images[i] * 255 / 16).round().astype(np.uint8))
            .resize((32, 32), Image.Resampling.BICUBIC)
            .convert("RGB")
            for i in ids
        ]
        return np.stack([np.asarray(im).transpose(2, 0, 1).reshape(-1) for im in images])

    parts = {f"data_batch_{k + 1}": p for k, p in enumerate(np.array_split(order[test:], 5))}
    for name, ids in {**parts, "test_batch": order[:test]}.items():
        with (folder / name).open("wb") as f:
            pickle.dump({"data": rows(ids), "labels": digits.target[ids].tolist()}, f)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [str(d) for d in range(10)]}, f)
    return root


def fit(args: list[str], cwd: Path) -> tuple[Path, float]:
    """The checkpoint ``zoo fit`` tested (its best, else its last) and the fit's wall time."""
    _, wall = run_zoo("fit", args, cwd)
    checkpoints = sorted(cwd.glob("runs/*/version_0/checkpoints/best-*.ckpt"))
    return (checkpoints or list(cwd.glob("runs/*/version_0/checkpoints/last.ckpt")))[0], wall


def test(args: list[str], ckpt: Path, mode: str, cwd: Path) -> dict:
    """``zoo test --ckpt_path CKPT --tta MODE``: test top-1, test loss and wall time."""
    _, wall = run_zoo("test", [*args, "--ckpt_path", str(ckpt), "--tta", mode], cwd)
    (log,) = cwd.glob("runs/*/version_*/metrics.csv")
    row = next(r for r in csv.DictReader(log.open()) if r.get("test/top1"))
    return {"mode": mode, "top1": float(row["test/top1"]), "loss": float(row["test/loss"]), "wall_s": wall}


def refused(args: list[str], ckpt: Path, mode: str, cwd: Path) -> dict:
    done, _ = run_zoo("test", [*args, "--ckpt_path", str(ckpt), "--tta", mode], cwd, ok=False)
    error = next((line for line in done.stderr.splitlines() if line.startswith("error:")), "")
    return {"mode": mode, "exit_code": done.returncode, "error": error}


def run_finetune(tmp: Path) -> dict:
    data = tmp / "lfw"
    write_folder(data, seed=0)  # the split of benchmarks/lfw_finetune.py's seed 0
    args = [*FINETUNE, "--data.root", str(data)]
    ckpt, wall = fit(args, tmp / "finetune")
    tests = [test(args, ckpt, mode, tmp / f"finetune-{mode}") for mode in MODES["finetune"]]
    return {
        "data": "skimage.data.lfw_subset: 10 faces + 10 non-faces to train (seed 0), the other 180 to test",
        "fit": f"zoo fit {' '.join(args[:-1])} DIR",
        "fit_wall_s": wall,
        "tests": tests,
    }


def run_cifar(tmp: Path) -> dict:
    data = write_digits_cifar(tmp / "digits-cifar")
    args = [*CIFAR, "--data.root", str(data)]
    ckpt, wall = fit([*args, *CIFAR_FIT], tmp / "cifar")
    tests = [test(args, ckpt, mode, tmp / f"cifar-{mode}") for mode in MODES["cifar"]]
    declared = [*args, "--data.flip_invariant", "true"]
    tests.append({**test(declared, ckpt, "flip", tmp / "cifar-flip"), "note": "--data.flip_invariant true"})
    return {
        "data": "sklearn digits as CIFAR-10 files: 8x8 upscaled to 32x32 RGB, 1,297 to train and validate, 500 to test",
        "fit": f"zoo fit {' '.join(args[:-1])} DIR {' '.join(CIFAR_FIT)}",
        "fit_wall_s": wall,
        "tests": tests,
        "refused": refused(args, ckpt, "flip", tmp / "cifar-refused"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=sorted(MODES), default=sorted(MODES))
    args = parser.parse_args()
    out = HERE / "results" / "tta.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            results[name] = {"finetune": run_finetune, "cifar": run_cifar}[name](Path(tmp) / name)
            results[name]["machine"] = machine()
            print(name, json.dumps(results[name], indent=1), flush=True)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "results" / "tta.md").write_text(markdown(results))
    print(markdown(results))


TITLES = {
    "finetune": "Fine-tuning recipe: EfficientNet-Lite0 on 10 + 10 photos (lfw_subset, faces vs non-faces)",
    "cifar": "CIFAR-style recipe: digits as CIFAR-10 files (pad-and-crop training, crop_pct 1 evaluation)",
}


def markdown(results: dict) -> str:
    lines = ["# Test-time augmentation: test top-1 and loss with and without `--tta`", ""]
    for name in ("finetune", "cifar"):
        if name not in results:
            continue
        r = results[name]
        base = r["tests"][0]
        n = 180 if name == "finetune" else 500
        lines += [
            f"## {TITLES[name]}",
            "",
            f"{r['data']}; {r['machine']}. Trained with `{r['fit']}` ({r['fit_wall_s']:.0f} s); each row is "
            f"`zoo test --ckpt_path CKPT --tta MODE` on the same checkpoint (one image = {1 / n:.4f} of top-1).",
            "",
            "| --tta | views | test top-1 | change | test loss | wall |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for t in r["tests"]:
            views = {"none": 1, "flip": 2, "crops": 5, "flip+crops": 10, "scales": 3}[t["mode"]]
            mode = f"{t['mode']} ({t['note']})" if t.get("note") else t["mode"]
            lines.append(
                f"| {mode} | {views} | {t['top1']:.4f} | {t['top1'] - base['top1']:+.4f} | {t['loss']:.4f} | "
                f"{t['wall_s']:.1f} s |"
            )
        if r.get("refused"):
            f = r["refused"]
            lines += ["", f"`--tta flip` without the override: exit {f['exit_code']}, `{f['error']}`"]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
