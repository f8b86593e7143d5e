"""Messy folders read as a viewer shows them: ``zoo check-data``'s report and the data module's samples on a folder
with every kind of bad file and link (tests/messy.py), the same split on both sides, leaks across splits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from messy import CLASSES, make_messy_folder, photos

from zoo.data import ImageFolderDataModule

SPLIT = ("--data.val_fraction", "0.25", "--data.test_fraction", "0.25")
REPO = Path(__file__).resolve().parents[1]


def check_data(zoo_cli, capsys, *args) -> tuple[int, str, str]:
    code = zoo_cli("check-data", *args)
    out = capsys.readouterr()
    return code, out.out, out.err


def counted(out: str, kind: str) -> dict[str, int]:
    """{reason: count} of the report's ``  kind: N reason: examples`` lines."""
    found = re.findall(rf"^  {kind}: (\d+) (.+?): ", out, flags=re.M)
    return {reason: int(n) for n, reason in found}


def table(out: str) -> dict[str, list[int]]:
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if (
            parts
            and parts[0] in (*CLASSES, "total")
            and all(p.isdigit() for p in parts[1:])
            and len(parts) > 1
        ):
            rows[parts[0]] = [int(p) for p in parts[1:]]
    return rows


def test_check_data_reports_every_bad_file_and_the_data_module_reads_each_image_once(
    tmp_path, zoo_cli, capsys
):
    root = tmp_path / "pets"
    expected = make_messy_folder(root)
    code, out, _ = check_data(zoo_cli, capsys, root, *SPLIT)
    assert code == 0
    assert counted(out, "skipped") == {
        "broken link": 1,
        "hidden (name starts with '.')": 1,
        "link to another class's image": 1,
        "not an image (by extension)": 1,
        "same file reached twice (link or alias)": 1,
        "unreadable (PIL cannot identify it)": 1,
    }
    assert counted(out, "converted") == {
        "1-bit to 8-bit": 1,
        "16-bit scaled to 8-bit": 1,
        "CMYK to RGB": 1,
        "EXIF orientation applied": 1,
        "palette with transparency, over white": 1,
        "transparency composited over white": 2,  # LA and RGBA
    }
    assert counted(out, "folder") == {"folder link followed before (loop or alias)": 2}
    assert "cat/loop" in out and "dog/up" in out and "owl/borrowed.jpg" in out and "dog/notes.jpg" in out
    assert "Decoding: 1 image(s) fail to decode, skipped when read: cat/truncated.jpg" in out
    assert "Duplicates by content: 0 group(s)" in out and "26 image(s) kept, 6 file(s) skipped" in out

    # the data module lists the same 26 files, each once, with the label of the folder that holds it
    dm = ImageFolderDataModule(str(root), val_fraction=0.25, test_fraction=0.25, num_workers=0, image_size=32)
    with pytest.warns(UserWarning, match="skipped file"):
        dm.setup("fit")
    samples = [s for split in dm.splits.values() for s in split.samples]
    assert len(samples) == 26 == len(expected["kept"])  # today's torchvision listing: loops repeat files
    assert {Path(p).name: y for p, y in samples} == expected["kept"]
    assert len({os.path.realpath(p) for p, _ in samples}) == 26
    # and splits them as check-data says, class by class
    rows = table(out)
    for k, name in enumerate(CLASSES):
        assert rows[name] == [dm.splits[s].targets.count(k) for s in ("train", "val", "test")]
    assert rows["total"] == [len(dm.splits[s]) for s in ("train", "val", "test")] == [12, 7, 7]


def test_converted_images_have_the_pixels_a_viewer_shows(tmp_path):
    from sklearn.datasets import load_digits

    from zoo.data.decode import read_image

    root = tmp_path / "pets"
    make_messy_folder(root)
    phone = read_image(root / "cat" / "phone.jpg")
    assert phone.size == (40, 20)  # stored 20×40, EXIF orientation 6: shown wide
    upright = np.asarray(photos(1, size=(40, 20), seed=9)[0], dtype=float)
    assert np.abs(np.asarray(phone, dtype=float) - upright).mean() < 8  # the photo, upright (JPEG noise only)
    deep = np.asarray(read_image(root / "dog" / "deep16.png", "L"), dtype=float)
    digit = load_digits().images[0] / 16 * 255
    assert np.abs(deep - digit).max() <= 1 and (deep == 255).mean() < 0.2  # not 99.5 % white
    palette = read_image(root / "dog" / "palette.png")
    from PIL import Image

    index = np.asarray(Image.open(root / "dog" / "palette.png"))
    assert (np.asarray(palette)[index == 0] == 255).all()  # the transparent colour: white, as shown
    cmyk = np.asarray(read_image(root / "owl" / "print.jpg"), dtype=float)
    assert np.abs(cmyk - np.asarray(photos(1, seed=6)[0], dtype=float)).mean() < 8
    ink = np.asarray(read_image(root / "owl" / "ink.png", "L"))
    assert set(np.unique(ink)) == {0, 255}


def test_links_into_another_split_and_copies_across_splits_are_reported(tmp_path, zoo_cli, capsys):
    root = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2)):
        for c, name in enumerate(("a", "b")):
            (root / split / name).mkdir(parents=True)
            for i, img in enumerate(photos(n, seed=10 * c + n)):
                img.save(root / split / name / f"{name}{i}.png")
    os.symlink("../../val/a/a0.png", root / "train" / "a" / "from_val.png")  # the same file in two splits
    (root / "val" / "b" / "copy.png").write_bytes((root / "train" / "b" / "b1.png").read_bytes())
    code, out, _ = check_data(zoo_cli, capsys, root, "--data.test_fraction", "0")
    assert code == 0
    assert counted(out, "skipped") == {"link into another split's folder": 1}
    assert "Duplicates across splits: 1 link(s)" in out
    assert "1 group(s) of identical files, 1 across splits" in out
    assert "train train/b/b1.png = val val/b/copy.png" in out
    dm = ImageFolderDataModule(str(root), num_workers=0, test_fraction=0.0)
    with pytest.warns(UserWarning, match="link into another split"):
        dm.setup("fit")
    assert len(dm.splits["train"]) == 8 and len(dm.splits["val"]) == 5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: r / "nowhere", "does not exist"),
        (lambda r: r, "no class folders"),
        (
            lambda r: (r / "a").mkdir() or (r / "a" / "x.txt").write_text("") or r,
            "/a' holds no readable images",
        ),
        (lambda r: (r / "a").mkdir() or os.symlink("a", r / "b") or r, "are the same folder"),
    ],
)
def test_unusable_folders_exit_non_zero_with_one_line(tmp_path, zoo_cli, capsys, make, message):
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(SystemExit) as stopped:
        zoo_cli("check-data", make(root))
    out, err = capsys.readouterr()
    assert stopped.value.code == 2 and out == ""  # a user's mistake: exit 2, no traceback
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_check_data_does_not_import_lightning(tmp_path):
    root = tmp_path / "pets"
    make_messy_folder(root)
    code = (
        "import sys; from recipes.commands.check_data import main; "
        f"assert main([{str(root)!r}, '--hash', 'false']) == 0; "
        "assert 'lightning' not in sys.modules and 'timm' not in sys.modules, 'imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
