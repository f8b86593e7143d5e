"""The CIFAR data module reads torchvision's on-disk format, written here by the test (no download)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from zoo import ImageClassifier
from zoo.data import CIFARDataModule

PER_BATCH = 40  # images per training batch file (CIFAR-10 has five)


def _images(n: int, labels: np.ndarray, classes: int, rng) -> np.ndarray:
    """Rows of 3072 bytes (R plane, G plane, B plane), as in the CIFAR files; brightness tells the class."""
    base = (labels[:, None] * (200 // classes) + 20).astype(np.int64)
    return np.clip(base + rng.integers(0, 30, (n, 3072)), 0, 255).astype(np.uint8)


def write_cifar(root: Path, variant: int = 10, test_size: int = 50) -> Path:
    """The python-pickle batches torchvision reads: CIFAR-10's data_batch_1..5/test_batch/batches.meta, or
    CIFAR-100's train/test/meta, with labels under ``labels`` or ``fine_labels``."""
    rng = np.random.default_rng(0)
    folder = root / ("cifar-10-batches-py" if variant == 10 else "cifar-100-python")
    folder.mkdir(parents=True)
    key = "labels" if variant == 10 else "fine_labels"
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    if variant == 100:
        names = ["train", "test"]
    for name in names:
        n = test_size if name.startswith("test") else PER_BATCH * (5 if variant == 100 else 1)
        labels = np.arange(n) % variant
        entry = {
            "data": _images(n, labels, variant, rng),
            key: labels.tolist(),
            "filenames": [f"{i}.png" for i in range(n)],
        }
        with (folder / name).open("wb") as f:
            pickle.dump(entry, f)
    meta_key = "label_names" if variant == 10 else "fine_label_names"
    with (folder / ("batches.meta" if variant == 10 else "meta")).open("wb") as f:
        pickle.dump({meta_key: [f"kind{k}" for k in range(variant)]}, f)
    return folder


@pytest.mark.parametrize("variant", [10, 100])
def test_reads_the_local_files_with_a_stratified_validation_split(tmp_path, variant, capsys):
    write_cifar(tmp_path, variant, test_size=100 if variant == 100 else 50)
    dm = CIFARDataModule(str(tmp_path), variant=variant, check_md5=False, val_fraction=0.5, num_workers=0)
    dm.prepare_data()  # download=True finds the files and fetches nothing
    dm.setup("fit")
    assert dm.num_classes == variant and dm.class_names[:2] == ["kind0", "kind1"]
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 100, "val": 100, "test": 100 if variant == 100 else 50}
    counts = np.bincount(dm.splits["val"].targets, minlength=variant)
    assert counts.max() - counts.min() <= 1  # stratified
    table = capsys.readouterr().out
    assert "kind0" in table and ("... 80 more" in table) == (variant == 100)  # 20 rows of 100 classes
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 3, 32, 32) and y.dtype == torch.long


def test_pixels_and_statistics_match_the_files(tmp_path):
    folder = write_cifar(tmp_path)
    dm = CIFARDataModule(str(tmp_path), check_md5=False, val_fraction=0.5, num_workers=0, stats_images=0)
    dm.setup("fit")
    rows = []
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"):
        with (folder / name).open("rb") as f:
            rows.append(pickle.load(f)["data"])
    images = np.concatenate(rows).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> HWC
    train = dm.splits["train"].data
    assert all(any(np.array_equal(img, other) for other in images) for img in train[:5])
    cfg = dm.preprocess_config()  # μ_c, σ_c of the training split's pixels
    pixels = train.reshape(-1, 3) / 255.0
    assert np.allclose(cfg["mean"], pixels.mean(0), atol=1e-6)
    assert np.allclose(cfg["std"], pixels.std(0), atol=1e-6)


def test_pad_crop_translates_and_eval_keeps_the_image(tmp_path):
    write_cifar(tmp_path)
    dm = CIFARDataModule(str(tmp_path), check_md5=False, num_workers=0, preprocess="none", hflip=0.0)
    dm.setup("fit")
    train, evaluate = dm.transforms()
    image = dm.splits["train"].data[0]
    exact = torch.from_numpy(image).permute(2, 0, 1)  # uint8: normalised per batch, on the device
    assert torch.equal(evaluate(_pil(image)), exact)  # crop_pct 1.0 at 32: identity
    torch.manual_seed(0)
    shifted = [train(_pil(image)) for _ in range(10)]
    assert all(s.shape == (3, 32, 32) for s in shifted)
    assert any(not torch.equal(s, exact) for s in shifted)  # random translations by up to 4 pixels


def _pil(array):
    from PIL import Image

    return Image.fromarray(array)


def test_one_training_epoch_and_predict_ids(tmp_path):
    write_cifar(tmp_path)
    dm = CIFARDataModule(str(tmp_path), check_md5=False, num_workers=0, batch_size=16, val_fraction=0.2)
    model = ImageClassifier("convnet", num_classes=10, model_kwargs={"widths": [8], "depth": 1})
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 10  # 160 of the 200 training images, batches of 16
    batches = trainer.predict(model, datamodule=dm)
    ids = [i for b in batches for i in b["ids"]]
    assert ids[:2] == ["test/0", "test/1"] and len(ids) == 50


def test_missing_data_names_the_folder(tmp_path):
    dm = CIFARDataModule(str(tmp_path / "nothing"), download=False)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found .*nothing/cifar-10-batches-py"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="variant must be 10 or 100"):
        CIFARDataModule(variant=20)
