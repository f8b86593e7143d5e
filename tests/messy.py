"""A folder of real photos with every kind of messy file and link a user's folder has (for the listing tests)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

CLASSES = ("cat", "dog", "owl")
PER_CLASS = 6  # plain RGB photo crops per class


def photos(n: int, size: tuple[int, int] = (40, 30), seed: int = 0) -> list[Image.Image]:
    """``n`` crops of scikit-learn's two sample photos, resized to ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(a) for a in load_sample_images().images]
    out = []
    for i in range(n):
        img = images[i % 2]
        w, h = img.size
        cw, ch = int(rng.integers(w // 4, w // 2)), int(rng.integers(h // 4, h // 2))
        x, y = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
        out.append(img.crop((x, y, x + cw, y + ch)).resize(size, Image.BILINEAR))
    return out


def digit16() -> Image.Image:
    """A real 8×8 digit as a 16-bit grey image, scaled to 0..65535 (PIL mode I;16)."""
    d = load_digits().images[0]
    return Image.fromarray((d / 16 * 65535).astype(np.uint16))


def make_messy_folder(root: Path) -> dict:
    """Write the folder and return what a correct reading finds: ``kept`` {name: label}, ``converted`` names,
    and the bad files by kind."""
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    kept: dict[str, int] = {}
    for c, name in enumerate(CLASSES):
        for i, img in enumerate(photos(PER_CLASS, seed=c)):
            img.save(root / name / f"{name}{i}.{'jpg' if i % 2 else 'png'}")
            kept[f"{name}{i}.{'jpg' if i % 2 else 'png'}"] = c
    cat, dog, owl = (root / n for n in CLASSES)
    upright = photos(1, size=(40, 20), seed=9)[0]  # wide as the viewer shows it
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: the viewer rotates it 90° clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(cat / "phone.jpg", exif=exif.tobytes())
    digit16().save(dog / "deep16.png")
    pal = photos(1, seed=3)[0].convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(dog / "palette.png", transparency=0)
    grey = photos(1, seed=4)[0].convert("L")
    Image.merge("LA", (grey, grey.point(lambda v: 255 if v > 100 else 0))).save(dog / "grey_alpha.png")
    photos(1, seed=5)[0].convert("RGBA").save(owl / "alpha.png")
    photos(1, seed=6)[0].convert("CMYK").save(owl / "print.jpg")
    photos(1, seed=7)[0].convert("1").save(owl / "ink.png")
    converted = {"phone.jpg": 0, "deep16.png": 1, "palette.png": 1, "grey_alpha.png": 1, "alpha.png": 2}
    converted |= {"print.jpg": 2, "ink.png": 2}
    kept |= converted
    buf = io.BytesIO()
    photos(1, seed=8)[0].save(buf, "JPEG")
    (cat / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 3 // 4])
    kept["truncated.jpg"] = 0  # its header reads: found only when decoded
    (dog / "notes.jpg").write_text("a text file named .jpg")
    (cat / "readme.txt").write_text("not an image")
    (cat / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    os.symlink(".", cat / "loop")  # cat/loop -> .
    os.symlink("..", dog / "up")  # dog/up -> ..
    os.symlink("cat1.jpg", cat / "alias.jpg")  # a second name for one file
    os.symlink("../cat/cat3.jpg", owl / "borrowed.jpg")  # a cat photo linked from the owl folder
    os.symlink("nowhere.jpg", owl / "gone.jpg")
    return {
        "kept": kept,
        "converted": set(converted),
        "unreadable": {"notes.jpg"},
        "decode_errors": {"truncated.jpg"},
        "not_image": {"readme.txt"},
        "hidden": {".DS_Store"},
        "duplicate": {"alias.jpg"},
        "other_class": {"borrowed.jpg"},
        "broken": {"gone.jpg"},
        "loops": {"loop", "up"},
    }
