"""``zoo export``: ONNX and ``torch.export`` files of a zoo CNN and a timm backbone equal their checkpoints on
batches of several sizes, carry the checkpoint's preprocessing and classes, and serve the onnxruntime-only
prediction of docs/export.md, which matches ``zoo predict``."""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import FAST_TRAINER
from PIL import Image

from zoo.training.module import ImageClassifier

DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"
SMALL_CNN = "{widths: [8, 16], depth: 1}"
GREY_16 = (
    "--recipe",
    "folder",
    "--data.channels",
    "1",
    "--data.image_size",
    "16",
)  # the folder recipe on 16-px greys
QUICK = ("--trainer.max_epochs", "1", "--test_after_fit", "false", *FAST_TRAINER)


def write_digits_folder(root: Path, per_class: int | None = None) -> Path:
    """scikit-learn's real 8×8 digits as grey PNG files, ``root/<digit>/<index>.png`` (0..16 → 0..255)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if per_class is not None and seen.get(int(label), 0) >= per_class:
            continue
        seen[int(label)] = seen.get(int(label), 0) + 1
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image * 255 / 16).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    return root


def fit(where: Path, *args: str) -> Path:
    """Run ``zoo fit`` in ``where``; the run's last checkpoint."""
    from recipes.cli import main

    cwd = os.getcwd()
    os.chdir(where)
    try:
        assert main(["fit", *args, *QUICK]) == 0
    finally:
        os.chdir(cwd)
    return where / "runs" / args[args.index("--recipe") + 1] / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Checkpoints of two short runs: the folder recipe's CNN on digit PNGs (grey, 16×16), and the digits
    recipe's CNN."""
    where = tmp_path_factory.mktemp("export")
    data = write_digits_folder(where / "digits", per_class=20)
    folder = (
        "--data.root",
        str(data),
        "--data.num_workers",
        "0",
        "--data.crop",
        "center",
        "--data.hflip",
        "0",
    )
    return {
        "data": data,
        "folder": fit(
            where,
            *GREY_16,
            *folder,
            "--model.model_kwargs",
            SMALL_CNN,
        ),
        "digits": fit(where, "--recipe", "digits", "--trainer.limit_train_batches", "3"),
    }


@pytest.fixture(scope="module")
def timm_run(runs, tmp_path_factory):
    """timm's efficientnet_lite0 from scratch on the same PNGs (RGB, 32×32), 2 steps."""
    where = tmp_path_factory.mktemp("export_timm")
    folder = ("--data.root", str(runs["data"]), "--data.num_workers", "0", "--data.image_size", "32")
    return fit(
        where,
        "--recipe",
        "finetune",
        *folder,
        "--model.pretrained",
        "false",
        "--finetune.strategy",
        "none",
        "--data.batch_size",
        "16",
        "--trainer.limit_train_batches",
        "2",
    )


def checkpoint(recipe: str, runs: dict, request) -> Path:
    return request.getfixturevalue("timm_run") if recipe == "finetune" else runs[recipe]


def reference(ckpt: Path) -> ImageClassifier:
    """The checkpoint loaded by Lightning, the way ``zoo validate`` sees it."""
    return ImageClassifier.load_from_checkpoint(ckpt, weights_only=True, pretrained=False).eval()


def export(zoo_cli, capsys, recipe: str, ckpt: Path, fmt: str, output: str, *extra: str) -> str:
    code = zoo_cli(
        "export", "--recipe", recipe, "--ckpt_path", ckpt, "--format", fmt, "--output", output, *extra
    )
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def check_difference_line(out: str) -> float:
    """The largest difference ``zoo export`` printed for its own check."""
    found = re.search(r"largest \|logit difference\| from the checkpoint ([0-9.e+-]+)", out)
    assert found, out
    return float(found.group(1))


def onnx_logits(path: str, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("recipe", ["folder", "digits", pytest.param("finetune", marks=pytest.mark.slow)])
def test_onnx_and_pt2_equal_the_checkpoint_on_batches_of_1_3_and_8(runs, recipe, zoo_cli, capsys, request):
    data = ("--data.root", str(runs["data"])) if recipe != "digits" else ()
    channels = ("--data.channels", "1") if recipe == "folder" else ()
    ckpt = checkpoint(recipe, runs, request)
    out = export(zoo_cli, capsys, recipe, ckpt, "onnx", f"{recipe}.onnx", *data, *channels)
    assert re.search(r"8 (val|test) images of the recipe's data", out) and check_difference_line(out) < 1e-4
    out = export(zoo_cli, capsys, recipe, ckpt, "pt2", f"{recipe}.pt2", *data, *channels)
    assert check_difference_line(out) < 1e-4

    model = reference(ckpt)
    shape = json.loads(Path(f"{recipe}.json").read_text())["input_size"]
    program = torch.export.load(f"{recipe}.pt2").module()
    torch.manual_seed(0)
    for n in (1, 3, 8):
        x = torch.randn(n, *shape)
        with torch.no_grad():
            expected = model(x)
            got_pt2 = program(x)
        got_onnx = onnx_logits(f"{recipe}.onnx", x)
        assert got_onnx.shape == got_pt2.shape == (n, model.num_classes)
        assert np.abs(got_onnx - expected.numpy()).max() < 1e-4
        assert (got_pt2 - expected).abs().max().item() < 1e-4


def test_metadata_round_trips_the_checkpoints_preprocessing_and_classes(runs, zoo_cli, capsys):
    ckpt = torch.load(runs["folder"], map_location="cpu", weights_only=True)
    saved = ckpt["ImageFolderDataModule"]  # the data module's state: what the model was trained with
    data = ("--data.root", str(runs["data"]), "--data.channels", "1")
    export(zoo_cli, capsys, "folder", runs["folder"], "onnx", "m.onnx", *data)
    export(zoo_cli, capsys, "folder", runs["folder"], "pt2", "m.pt2")  # without the data: random inputs
    session = ort.InferenceSession("m.onnx", providers=["CPUExecutionProvider"])
    from_onnx = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    from_json = json.loads(Path("m.json").read_text())
    for meta in (from_onnx, from_json):
        for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode"):
            value = saved["config"][key]
            assert meta[key] == (list(value) if isinstance(value, (list, tuple)) else value), key
        assert meta["input_size"] == [1, 16, 16] and meta["interpolation"] == "bicubic"
        assert meta["class_names"] == saved["class_names"] == [str(d) for d in range(10)]
        assert (meta["num_classes"], meta["arch"]) == (10, "convnet")
    assert from_onnx["opset"] == 18
    extra = {"metadata.json": ""}
    torch.export.load("m.pt2", extra_files=extra)
    assert json.loads(extra["metadata.json"]) == from_json


def test_without_the_recipes_data_the_check_uses_random_inputs_and_says_so(runs, zoo_cli, capsys):
    out = export(zoo_cli, capsys, "folder", runs["folder"], "onnx", "r.onnx", "--data.root", "no/such/folder")
    assert "Checking on random inputs: the recipe's data is not at hand" in out
    assert "no/such/folder" in out and "8 random inputs" in out and check_difference_line(out) < 1e-4


def test_the_check_feeds_the_recipes_images_as_the_model_saw_them_in_training(runs):
    from recipes.command_args import RecipeArgs
    from recipes.commands.export import real_inputs
    from recipes.lightning_cli import expand_recipe
    from zoo.tools.export import preprocessing

    config = preprocessing(torch.load(runs["folder"], map_location="cpu", weights_only=True))
    args = expand_recipe(["--recipe", "folder", "--data.root", str(runs["data"]), "--data.channels", "1"])
    x, where, names = real_inputs(RecipeArgs(args, "folder"), config, 8)
    assert x.shape == (8, 1, 16, 16) and x.dtype == torch.float32 and names == [str(d) for d in range(10)]
    assert abs(x.mean().item()) < 1 and 0.3 < x.std().item() < 3  # (x / 255 − μ)/σ with the training μ, σ


# --- docs/export.md: predict one image with numpy, Pillow and onnxruntime only -------------------------------
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def classify(model_path: str, image_path: str) -> tuple[str, float]:
    """The most probable class of one image and its probability, with numpy, Pillow and onnxruntime only."""
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    channels, size, _ = meta["input_size"]  # the zoo's inputs are square
    image = Image.open(image_path).convert("L" if channels == 1 else "RGB")

    # resize the short side to floor(size / crop_pct), keeping the aspect ratio, then crop the centre
    scale, (w, h) = math.floor(size / meta["crop_pct"]), image.size
    new_w, new_h = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
    image = image.resize((new_w, new_h), RESAMPLE[meta["interpolation"]])
    left, top = int(round((new_w - size) / 2)), int(round((new_h - size) / 2))
    image = image.crop((left, top, left + size, top + size))

    # C×H×W floats in [0, 1], then (x - mean) / std per channel
    x = np.asarray(image, dtype=np.float32).reshape(size, size, channels).transpose(2, 0, 1) / 255
    mean = np.array(meta["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.array(meta["std"], dtype=np.float32).reshape(-1, 1, 1)
    x = (x - mean) / std

    logits = session.run(None, {meta["input_name"]: x[None]})[0][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    best = int(probs.argmax())
    return meta["class_names"][best], float(probs[best])


def test_the_docs_snippet_is_the_function_tested_here():
    block = next(b for b in re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S) if "def classify" in b)
    assert inspect.getsource(classify) in block
    assert (
        "RESAMPLE = {\n" + "".join(f'    "{k}": Image.Resampling.{v.name},\n' for k, v in RESAMPLE.items())
        in block
    )
    imports = {line for line in block.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {
        "import json",
        "import math",
        "import numpy as np",
        "import onnxruntime as ort",
        "from PIL import Image",
    }


@pytest.mark.parametrize("recipe", ["folder", pytest.param("finetune", marks=pytest.mark.slow)])
def test_onnxruntime_alone_predicts_what_zoo_predict_does(runs, recipe, zoo_cli, capsys, tmp_path, request):
    photos = tmp_path / "photos"
    photos.mkdir()
    for digit in ("3", "7"):  # a PNG of each of two classes, and one as a JPEG of another size
        first = sorted((runs["data"] / digit).iterdir())[0]
        Image.open(first).save(photos / f"{digit}.png")
    Image.open(photos / "7.png").resize((12, 9)).save(photos / "7_wide.jpg")
    channels = ("--data.channels", "1") if recipe == "folder" else ()
    ckpt = checkpoint(recipe, runs, request)
    export(zoo_cli, capsys, recipe, ckpt, "onnx", "model.onnx", *channels)
    args = ("--recipe", recipe, "--ckpt_path", ckpt, "--data.predict_dir", photos, *channels)
    assert zoo_cli("predict", *args, "--predictions.output", "zoo.csv", *FAST_TRAINER) == 0
    with open("zoo.csv") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["3.png", "7.png", "7_wide.jpg"]
    for name, row in rows.items():
        label, prob = classify("model.onnx", str(photos / name))
        assert label == row["class_1"]
        # the zoo resizes uint8 tensors (torchvision), the snippet PIL images: equal to one grey level
        assert prob == pytest.approx(float(row["prob_1"]), abs=1e-3)


# --- errors -------------------------------------------------------------------------------------------------
def test_missing_foreign_and_pickled_checkpoints_and_unknown_formats_are_one_line_errors(
    runs, zoo_cli, capsys, tmp_path
):
    def fails(*args: str) -> str:
        code = zoo_cli("export", "--recipe", "digits", *args)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        return err

    assert "checkpoint 'missing.ckpt' does not exist" in fails("--ckpt_path", "missing.ckpt")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    err = fails("--ckpt_path", str(tmp_path / "notes.ckpt"))
    assert "notes.ckpt" in err and "not a torch" in err
    err = fails("--ckpt_path", str(runs["digits"]), "--format", "tflite", "--output", "x.tflite")
    assert "unknown --format 'tflite'; choose one of onnx, pt2" in err and not Path("x.tflite").exists()

    ckpt = torch.load(runs["digits"], map_location="cpu", weights_only=True)
    ckpt["notes"] = argparse.Namespace(owner="someone")  # a pickled object: refused by weights_only=True
    torch.save(ckpt, tmp_path / "pickled.ckpt")
    err = fails("--ckpt_path", str(tmp_path / "pickled.ckpt"), "--output", "p.onnx")
    assert "weights_only=True" in err and "--weights_only false" in err and not Path("p.onnx").exists()
    assert (
        zoo_cli(
            "export",
            "--recipe",
            "digits",
            "--ckpt_path",
            tmp_path / "pickled.ckpt",
            "--weights_only",
            "false",
            "--output",
            "p.onnx",
        )
        == 0
    )
    assert Path("p.onnx").is_file()
