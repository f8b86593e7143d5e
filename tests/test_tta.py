"""Test-time augmentation: ``--tta`` averages the softmax over the right views, changes nothing for a network
that is mirror-symmetric by construction, makes views of the right number and size, and is refused with its
reason where the data says a flip changes the class (digits)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAINER
from lightning.pytorch import Trainer
from PIL import Image

from zoo import ImageClassifier
from zoo.data import ImageFolderDataModule
from zoo.data.transforms import eval_transform, merge_data_config, view_transform
from zoo.training import tta

CLASSES = ("face", "non_face")
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}


def lfw_folder(root: Path, train: int = 8, test: int = 6) -> Path:
    """scikit-image's real 25×25 grey photos (faces, non-faces: a mirror keeps the class) as
    ``train/CLASS/*.png`` and ``test/CLASS/*.png``."""
    from skimage.data import lfw_subset

    photos = (lfw_subset() * 255).round().astype(np.uint8)  # 100 faces, then 100 non-faces
    for c, name in enumerate(CLASSES):
        for split, ids in (("train", range(train)), ("test", range(train, train + test))):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in ids:
                Image.fromarray(photos[100 * c + i]).save(root / split / name / f"{i:03d}.png")
    return root


def folder_module(root: Path, **kwargs) -> ImageFolderDataModule:
    options = {
        "image_size": 32,
        "crop_pct": 0.875,
        "preprocess": "imagenet",
        "num_workers": 0,
        "batch_size": 64,
    }
    return ImageFolderDataModule(str(root), **{**options, **kwargs})


def small_convnet(num_classes: int = 2) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier("convnet", num_classes=num_classes, model_kwargs={"widths": [8, 16], "depth": 1})


def mirror_symmetric(state: dict) -> dict:
    """Every conv kernel made equal to its mirror, w ← (w + flip_W(w)) / 2: with same-padding 3×3 convs, 2×2
    pooling of even sizes and a global average pool, the network's output is then the same for an image and its
    mirror, f(flip(x)) = f(x), while an image and its upside-down copy still differ."""
    return {k: (v + v.flip(-1)) / 2 if k.endswith("weight") and v.dim() == 4 else v for k, v in state.items()}


# --- the averaging ------------------------------------------------------------------------------------------


def test_plain_batches_go_through_the_model_unchanged():
    model = small_convnet().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tta.view_scores(model, x), model(x))


def test_the_module_reports_the_mean_softmax_over_the_ten_views(tmp_path):
    """Ten-crop (five crops and their mirrors): what predict returns, and what test logs, against the softmax
    of each view computed by hand on the same normalised batch. The network, a linear map of the pixels, gives
    each view its own answer, far from uniform, so that any other way of combining them differs."""
    dm = folder_module(lfw_folder(tmp_path))
    model = small_convnet()
    model.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))
    torch.nn.init.normal_(model.model[1].weight, std=0.05)  # logits of a few units that differ between views
    assert tta.configure("flip+crops", "predict", model, dm) == 10
    trainer = Trainer(accelerator="cpu", **QUIET)
    probs = torch.cat([out["probs"] for out in trainer.predict(model, datamodule=dm)])

    (batch,) = list(dm.predict_dataloader())  # the test split, in order (no predict_dir)
    x = dm.on_after_batch_transfer(batch, 0)[0]
    assert x.shape == (12, 5, 3, 32, 32) and x.dtype == torch.float32
    model.eval()
    with torch.no_grad():
        views = [v for k in range(5) for v in (x[:, k], torch.flip(x[:, k], [-1]))]
        by_hand = torch.stack([model.model(v).softmax(-1) for v in views]).mean(0)
        centre = model.model(x[:, 4]).softmax(-1)
    torch.testing.assert_close(probs, by_hand, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(by_hand, centre, atol=1e-2)  # the other views do count
    geometric = torch.stack([model.model(v).log_softmax(-1) for v in views]).mean(0).softmax(-1)
    assert not torch.allclose(by_hand, geometric, atol=1e-2)  # and it is their softmax that is averaged

    (logged,) = trainer.test(model, datamodule=dm, verbose=False)
    y = torch.tensor(dm.splits["test"].targets)
    assert logged["test/loss"] == pytest.approx(
        -by_hand[torch.arange(len(y)), y].log().mean().item(), rel=1e-5
    )
    assert logged["test/top1"] == pytest.approx((by_hand.argmax(-1) == y).float().mean().item())


# --- the views ----------------------------------------------------------------------------------------------


def test_crops_and_scales_make_views_of_the_input_size(tmp_path):
    root = lfw_folder(tmp_path, train=3, test=2)
    dm = folder_module(root)
    (plain, _) = next(iter(dm.test_dataloader()))
    assert plain.shape == (4, 3, 32, 32)
    for views, count, same_as_eval in (("crops", 5, 4), ("scales", 3, 1)):
        dm.eval_views = views
        (x, _) = next(iter(dm.test_dataloader()))
        assert x.shape == (4, count, 3, 32, 32) and x.dtype == torch.uint8
        # crop_pct 0.875: the five crops' centre one, and the 0.875 zoom, are the eval crop itself
        assert torch.equal(x[:, same_as_eval], plain)
        assert all(not torch.equal(x[:, k], plain) for k in range(count) if k != same_as_eval)
        (p, ids) = next(iter(dm.predict_dataloader()))
        assert p.shape == (4, count, 3, 32, 32) and len(ids) == 4


def test_five_crops_have_room_when_the_eval_crop_is_the_whole_image():
    """CIFAR's crop_pct is 1 (the eval view is the whole 32×32 image): the crops come from a 36-pixel resize
    (c = 0.875), so they differ; from a non-square image, the short side is resized as the eval does."""
    cfg = merge_data_config({"input_size": (3, 32, 32), "crop_pct": 1.0, "interpolation": "bilinear"})
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    crops = view_transform(cfg, "crops")(photo)
    assert crops.shape == (5, 3, 32, 32)
    assert len({c.numpy().tobytes() for c in crops}) == 5
    zooms = view_transform(cfg, "scales")(photo)
    assert zooms.shape == (3, 3, 32, 32)
    assert torch.equal(zooms[0], eval_transform(cfg, normalize=False)(photo))  # crop_pct 1: the eval view


# --- the command line ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_ckpts(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data, last.ckpt of a two-step run of the folder recipe, the same with mirror-symmetric kernels)."""
    from recipes.cli import main

    where = tmp_path_factory.mktemp("tta")
    data = lfw_folder(where / "lfw")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        args = ["fit", "--recipe", "folder", "--data.root", data, *FOLDER, "--trainer.max_steps", "2"]
        assert main([*map(str, args), "--trainer.limit_val_batches", "1", "--test_after_fit", "false"]) == 0
    finally:
        os.chdir(cwd)
    (last,) = where.glob("runs/folder/version_0/checkpoints/last.ckpt")
    ckpt = torch.load(last, weights_only=True)
    ckpt["state_dict"] = mirror_symmetric(ckpt["state_dict"])
    symmetric = where / "symmetric.ckpt"
    torch.save(ckpt, symmetric)
    return data, last, symmetric


FOLDER = ("--data.image_size", "32", "--data.num_workers", "0", "--data.batch_size", "4", *FAST_TRAINER)


def predicted(zoo_cli, data: Path, ckpt: Path, mode: str) -> dict[str, float]:
    """{image: P(face)} from ``zoo predict --tta MODE``'s CSV."""
    out = Path(f"{ckpt.stem}-{mode}.csv")
    args = ("predict", "--recipe", "folder", "--data.root", data, *FOLDER, "--ckpt_path", ckpt, "--tta", mode)
    assert zoo_cli(*args, "--predictions.output", out, "--predictions.top_k", "2") == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    return {r["path"]: float(r["prob_1"] if r["class_1"] == CLASSES[0] else r["prob_2"]) for r in rows}


def test_a_mirror_symmetric_network_predicts_the_same_with_and_without_flip(zoo_cli, folder_ckpts):
    data, last, symmetric = folder_ckpts
    plain, flipped = predicted(zoo_cli, data, symmetric, "none"), predicted(zoo_cli, data, symmetric, "flip")
    assert plain.keys() == flipped.keys()
    assert max(abs(plain[k] - flipped[k]) for k in plain) <= 2e-6  # the CSV's 6 decimals
    # the same network before its kernels were symmetrised: the flip does change its answers
    plain, flipped = predicted(zoo_cli, data, last, "none"), predicted(zoo_cli, data, last, "flip")
    assert max(abs(plain[k] - flipped[k]) for k in plain) > 1e-4


def error_of(zoo_cli, capsys, *args) -> str:
    """The command's one ``error:`` line, last on stderr, exit code 2, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        zoo_cli(*args)
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-2:]
    line = next(x for x in last if x.startswith("error: "))
    assert last[-1] in (line, f"`zoo {args[0]} --help` lists every option")
    return line


DIGITS = (
    "--recipe",
    "digits",
    "--trainer.limit_test_batches",
    "1",
    "--allow_untrained",
    "true",
    *FAST_TRAINER,
)


def test_flip_on_digits_is_refused_with_the_reason(zoo_cli, capsys):
    line = error_of(zoo_cli, capsys, "test", *DIGITS, "--tta", "flip")
    assert line.startswith("error: --tta flip: mirrored images of this data change class")
    assert "DigitsDataModule declares data.flip_invariant false" in line
    assert "--data.flip_invariant true" in line  # what to do
    line = error_of(zoo_cli, capsys, "predict", *DIGITS, "--tta", "flip+crops")
    assert line.startswith("error: --tta flip+crops: mirrored images")
    assert not Path("runs/digits/version_0/metrics.csv").exists()  # refused before anything ran
    # the declaration decides, not the training augmentation: declared true, the flip runs
    assert zoo_cli("test", *DIGITS, "--tta", "flip", "--data.flip_invariant", "true") == 0


def test_what_the_data_or_the_command_cannot_take_is_refused(zoo_cli, capsys):
    line = error_of(zoo_cli, capsys, "test", *DIGITS, "--tta", "crops")
    assert line.startswith("error: --tta crops: DigitsDataModule has no eval resize to take crops from")
    line = error_of(zoo_cli, capsys, "validate", *DIGITS, "--tta", "scales")
    assert line.startswith("error: --tta scales applies to zoo test and zoo predict, not zoo validate")
    line = error_of(zoo_cli, capsys, "test", *DIGITS, "--tta", "mirror")
    assert line.startswith("error: --tta: expected one of 'none', 'flip', 'crops'")
