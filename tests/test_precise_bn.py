"""Precise BN: after it, a BN layer's running statistics are those of its input over the whole training split."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from callbacks import PreciseBN
from zoo.data import DigitsDataModule
from zoo.training.module import ImageClassifier


def _data() -> DigitsDataModule:
    # 1,077 training images in 3 equal batches of 359, without augmentation: one fixed training set
    return DigitsDataModule(batch_size=359, augment=False)


def _first_bn_input_stats(model: ImageClassifier, dm: DigitsDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and (unbiased) variance of the first BN layer's input over the training split."""
    conv = model.model.features[0][0]  # the conv feeding the first BN: the same in train and eval mode
    dm.setup("fit")
    with torch.no_grad():
        h = torch.cat([conv(x) for x, _ in dm.train_dataloader()])
    assert len(h) == 1077
    return h.mean((0, 2, 3)), h.transpose(0, 1).flatten(1).var(1)


class _MovingAverage(Callback):
    """The moving-average statistics BN kept while training, before PreciseBN replaces them."""

    def on_train_epoch_end(self, trainer, pl_module):
        self.running_mean = pl_module.model.features[0][1].running_mean.clone()


def test_running_statistics_become_the_exact_training_set_statistics():
    torch.manual_seed(0)
    dm, model = _data(), ImageClassifier(in_chans=1)
    precise, moving = PreciseBN(), _MovingAverage()
    trainer = Trainer(
        max_epochs=1,
        callbacks=[moving, precise],
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    assert precise.updates == 1  # no validation ran: recomputed once at the end
    bn = model.model.features[0][1]
    mean, var = _first_bn_input_stats(model, dm)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)  # μ = (1/N)·Σ h_i, exactly
    assert torch.allclose(bn.running_var, var, rtol=0.05)  # mean of 3 batch variances ≈ σ² over all N
    assert not torch.allclose(moving.running_mean, mean, atol=1e-3)  # the moving average was not exact


def test_checkpoints_hold_the_precise_statistics_recomputed_before_each_validation(tmp_path):
    torch.manual_seed(0)
    dm, model = _data(), ImageClassifier(in_chans=1)
    precise = PreciseBN(num_batches=None, every_n_epochs=1)
    trainer = Trainer(
        max_epochs=2,
        callbacks=[precise],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    assert precise.updates == 2  # before the validation of each epoch, not again at the end
    ckpt = torch.load(next((tmp_path / "checkpoints").glob("*.ckpt")), weights_only=True)
    restored = ImageClassifier(in_chans=1)
    restored.load_state_dict(ckpt["state_dict"])
    mean, _ = _first_bn_input_stats(restored, dm)
    assert torch.allclose(ckpt["state_dict"]["model.features.0.1.running_mean"], mean, atol=1e-5)


def test_bad_arguments_are_errors_naming_them():
    with pytest.raises(ValueError, match="num_batches=0 must be ≥ 1"):
        PreciseBN(num_batches=0)
    with pytest.raises(ValueError, match="every_n_epochs=0 must be ≥ 1"):
        PreciseBN(every_n_epochs=0)


def test_image_folder_batches_are_normalised_as_the_training_step_gets_them(tmp_path):
    """The image modules send uint8 batches and normalise them in on_after_batch_transfer: the statistics are
    those of the normalised images (reading the loader raw fed uint8 to the model and failed)."""
    from test_data_folder import TINY, make_folder

    from zoo.data import ImageFolderDataModule

    torch.manual_seed(0)
    root = make_folder(tmp_path / "imgs", {"red": 8, "green": 8, "blue": 8}, size=16)
    options = {"image_size": 16, "crop_pct": 1.0, "crop": "center", "hflip": 0.0, "fallback": "imagenet"}
    dm = ImageFolderDataModule(
        str(root), val_fraction=0.25, test_fraction=0.0, batch_size=6, num_workers=0, **options
    )
    model = ImageClassifier("convnet", num_classes=3, model_kwargs=TINY)
    precise = PreciseBN()
    trainer = Trainer(
        max_epochs=1,
        callbacks=[precise],
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    assert precise.updates == 1
    conv, bn = model.model.features[0][0], model.model.features[0][1]
    with torch.no_grad():  # 18 training images in 3 batches of 6, normalised by the module's own hook
        batches = [dm.on_after_batch_transfer(batch, 0)[0] for batch in dm.train_dataloader()]
        assert all(x.dtype == torch.float32 for x in batches) and sum(len(x) for x in batches) == 18
        h = torch.cat([conv(x) for x in batches])
    assert torch.allclose(bn.running_mean, h.mean((0, 2, 3)), atol=1e-5)
