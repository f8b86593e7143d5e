"""The hub folder of ``zoo export --format timm`` predicts, under plain timm, what ``zoo predict`` does.

    .venv/bin/python benchmarks/export_timm.py [--seeds 0 1 2] [--kinds probe full]

scikit-image's ``lfw_subset`` holds 200 real 25×25 grey photos, 100 faces then 100 non-faces. For each seed, 40
faces and 40 non-faces (drawn with that seed) form the training folder; the other 120 photos are held out. Then, as
a user would (each command a fresh process, the recipe's defaults but the strategy and, for ``full``, the epochs):

1. ``zoo fit --recipe finetune --data.root train --model.pretrained_path efficientnet-lite0-pypi`` with
   ``--finetune.strategy linear`` (``probe``: the linear probe alone) or ``--finetune.strategy full
   --trainer.max_epochs 4`` (``full``: the probe, then 3 epochs of every layer, BatchNorm statistics included);
2. ``zoo export --recipe finetune --data.root train --ckpt_path LAST --format timm --output model``;
3. ``zoo predict --recipe finetune --ckpt_path LAST --data.predict_dir held_out``: the zoo's predictions;
4. plain timm in a process that never imports the zoo: ``timm.create_model("local-dir:model", pretrained=True)``,
   ``timm.data.resolve_data_config`` + ``create_transform``, the class names of ``config.json``.

Agreement is the fraction of the 120 held-out photos whose top-1 class is the same in 3 and 4; the check requires
at least 99 % and the class names in config.json (the script exits 1 otherwise). Writes
benchmarks/results/export_timm.json and export_timm.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from zoo_run import machine, run_zoo, write_results

CLASSES = ("face", "non_face")
TRAIN_PER_CLASS = 40
REQUIRED = 0.99
FIT = ["--recipe", "finetune", "--model.pretrained_path", "efficientnet-lite0-pypi"]
KINDS = {
    "probe": ["--finetune.strategy", "linear"],
    "full": ["--finetune.strategy", "full", "--trainer.max_epochs", "4"],
}

PLAIN_TIMM = """
import json, sys
from pathlib import Path

import timm
import torch
from PIL import Image

folder, photos = sys.argv[1], sorted(Path(sys.argv[2]).iterdir())
model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
config = timm.data.resolve_data_config({}, model=model)
transform = timm.data.create_transform(**config)
mode = "L" if config["input_size"][0] == 1 else "RGB"
labels = model.pretrained_cfg["label_names"]
out = {}
with torch.no_grad():
    for photo in photos:
        probs = model(transform(Image.open(photo).convert(mode)).unsqueeze(0)).softmax(-1)[0]
        out[photo.name] = [labels[int(probs.argmax())], float(probs.max())]
assert not any(name == "zoo" or name.startswith("zoo.") for name in sys.modules)  # plain timm only
print(json.dumps(out))
"""


def write_folders(root: Path, seed: int) -> None:
    """train/CLASS/*.png: TRAIN_PER_CLASS photos of each class drawn with ``seed``; held_out/CLASS_i.png: the rest."""
    from skimage.data import lfw_subset

    photos = (lfw_subset() * 255).round().astype("uint8")  # (200, 25, 25): 100 faces, then 100 non-faces
    rng = np.random.default_rng(seed)
    (root / "held_out").mkdir(parents=True)
    for c, name in enumerate(CLASSES):
        ids = np.arange(100) + 100 * c
        train = set(rng.choice(ids, TRAIN_PER_CLASS, replace=False).tolist())
        (root / "train" / name).mkdir(parents=True)
        for i in ids:
            where = (
                root / "train" / name / f"{i:03d}.png"
                if i in train
                else root / "held_out" / f"{name}_{i:03d}.png"
            )
            Image.fromarray(photos[i]).save(where)


def one_run(kind: str, seed: int, tmp: Path) -> dict:
    write_folders(tmp, seed)
    train, held_out = str(tmp / "train"), tmp / "held_out"
    _, fit_s = run_zoo("fit", [*FIT, *KINDS[kind], "--data.root", train], tmp)
    last = str(tmp / "runs/finetune/version_0/checkpoints/last.ckpt")
    export = ["--recipe", "finetune", "--data.root", train, "--ckpt_path", last, "--format", "timm"]
    done, export_s = run_zoo("export", [*export, "--output", "model"], tmp)
    predict = ["--recipe", "finetune", "--ckpt_path", last, "--data.predict_dir", str(held_out)]
    run_zoo("predict", [*predict, "--predictions.output", "zoo.csv"], tmp)
    with open(tmp / "zoo.csv") as f:
        zoo = {Path(r["path"]).name: (r["class_1"], float(r["prob_1"])) for r in csv.DictReader(f)}
    plain = subprocess.run(
        [sys.executable, "-c", PLAIN_TIMM, str(tmp / "model"), str(held_out)],
        capture_output=True,
        text=True,
        check=True,
    )
    timm_side = {name: tuple(v) for name, v in json.loads(plain.stdout).items()}
    names = sorted(timm_side)
    assert names == sorted(zoo) and len(names) == 200 - 2 * TRAIN_PER_CLASS, (len(names), len(zoo))
    truth = {name: name.rsplit("_", 1)[0] for name in names}
    config = json.loads((tmp / "model/config.json").read_text())
    return {
        "kind": kind,
        "seed": seed,
        "photos": len(names),
        "agreement": sum(zoo[n][0] == timm_side[n][0] for n in names) / len(names),
        "max_prob_difference": max(abs(zoo[n][1] - timm_side[n][1]) for n in names),
        "zoo_top1": sum(zoo[n][0] == truth[n] for n in names) / len(names),
        "timm_top1": sum(timm_side[n][0] == truth[n] for n in names) / len(names),
        "label_names": config.get("label_names"),
        "export_check": next(
            line.strip() for line in done.stdout.splitlines() if "gives logits within" in line
        ),
        "fit_s": fit_s,
        "export_s": export_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        for kind in args.kinds:
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(one_run(kind, seed, Path(tmp)))
            print(json.dumps(runs[-1]), flush=True)
    passed = all(r["agreement"] >= REQUIRED and r["label_names"] == list(CLASSES) for r in runs)
    summary = {
        "data": f"skimage.data.lfw_subset: {TRAIN_PER_CLASS} faces + {TRAIN_PER_CLASS} non-faces to fine-tune on, "
        f"the other {200 - 2 * TRAIN_PER_CLASS} held out",
        "machine": machine(),
        "fit": {
            kind: "zoo fit " + " ".join([*FIT, *KINDS[kind]]) + " --data.root train" for kind in args.kinds
        },
        "required_agreement": REQUIRED,
        "passed": passed,
        "runs": runs,
    }
    write_results("export_timm", summary, markdown(summary))
    return 0 if passed else 1


def markdown(s: dict) -> str:
    lines = [
        "# Plain timm on the exported folder against `zoo predict` (lfw_subset, faces vs non-faces)",
        "",
        f"{s['data']}; {s['machine']}.",
        "",
        *(f"- fine-tune, {kind}: `{command}`" for kind, command in s["fit"].items()),
        "- export: `zoo export --recipe finetune --data.root train --ckpt_path LAST --format timm --output model`",
        '- plain timm: `timm.create_model("local-dir:model", pretrained=True)`, `resolve_data_config` + '
        "`create_transform`, class names from config.json, in a process that never imports the zoo",
        "",
        "| fine-tune | seed | held-out photos | same top-1 class | max \\|Δ prob\\| | top-1, zoo predict "
        "| top-1, plain timm | class names in config.json | fit | export |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in s["runs"]:
        lines.append(
            f"| {r['kind']} | {r['seed']} | {r['photos']} | **{r['agreement']:.2%}** | {r['max_prob_difference']:.1e} | "
            f"{r['zoo_top1']:.4f} | {r['timm_top1']:.4f} | {', '.join(r['label_names'] or [])} | {r['fit_s']:.1f} s "
            f"| {r['export_s']:.1f} s |"
        )
    verdict = "passed" if s["passed"] else "FAILED"
    lines += [
        "",
        f"Required: at least {s['required_agreement']:.0%} agreement and the class names: **{verdict}**.",
    ]
    checks = dict.fromkeys(r["export_check"] for r in s["runs"])
    lines += ["", "The export's own check, in every run: " + "; ".join(f"`{c}`" for c in checks)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
