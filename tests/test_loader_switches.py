"""Loader switches of the image data modules: workers, persistent workers and pinned memory, checked on the
loaders a trainer gets (worker processes observed, not just flags read)."""

from __future__ import annotations

import pytest
from lightning.pytorch import Trainer
from test_data_folder import make_folder

from zoo.data import ImageFolderDataModule


def data(root, **kw) -> ImageFolderDataModule:
    kw = {
        "image_size": 16,
        "batch_size": 4,
        "val_fraction": 0.25,
        "test_fraction": 0.0,
        "preprocess": "none",
        **kw,
    }
    dm = ImageFolderDataModule(str(root), **kw)
    dm.trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    dm.setup("fit")
    return dm


def worker_pids(loader) -> list[int]:
    """The pids of the worker processes that served one whole pass over ``loader``."""
    it = iter(loader)
    for _ in it:
        pass
    return sorted(w.pid for w in it._workers)


@pytest.mark.parametrize("persistent", [True, False])
def test_workers_and_persistent_workers_are_applied(tmp_path, persistent):
    dm = data(
        make_folder(tmp_path / "pets", {"cat": 8, "dog": 8}), num_workers=2, persistent_workers=persistent
    )
    loader = dm.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers is persistent
    first, second = worker_pids(loader), worker_pids(loader)
    assert len(first) == 2 and len(second) == 2
    assert (first == second) is persistent  # the same two processes serve the next epoch only when persistent
    val = dm.val_dataloader()
    assert val.num_workers == 2 and val.persistent_workers is persistent


def test_no_workers_loads_in_the_training_process(tmp_path):
    dm = data(make_folder(tmp_path / "pets", {"cat": 4, "dog": 4}), num_workers=0, persistent_workers=True)
    loader = dm.train_dataloader()
    assert (
        loader.num_workers == 0 and loader.persistent_workers is False
    )  # torch refuses persistent without workers
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 16, 16) and len(y) == 4


@pytest.mark.parametrize("asked", [None, True, False])
def test_memory_is_pinned_only_for_a_cuda_device(tmp_path, asked):
    dm = data(make_folder(tmp_path / "pets", {"cat": 4, "dog": 4}), num_workers=0, pin_memory=asked)
    assert dm.trainer.strategy.root_device.type == "cpu"
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert loader.pin_memory is False  # a CPU run: pinning would cost a copy and gain nothing
    assert dm.loader_options() == {"num_workers": 0, "persistent_workers": False, "pin_memory": False}


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_memory_is_pinned_for_a_cuda_run(tmp_path):
    root = make_folder(tmp_path / "pets", {"cat": 4, "dog": 4})
    dm = ImageFolderDataModule(str(root), image_size=16, batch_size=4, val_fraction=0.25, test_fraction=0.0)
    dm.trainer = Trainer(accelerator="gpu", devices=1, logger=False)
    dm.setup("fit")
    loader = dm.train_dataloader()
    x, _ = next(iter(loader))
    assert loader.pin_memory is True and x.is_pinned() and x.dtype.is_floating_point is False  # uint8 crosses
    assert ImageFolderDataModule(str(root), pin_memory=False).loader_options()["pin_memory"] is False
