"""The linear probe and the budget of the fine-tuning recipe: the head equals scikit-learn's logistic regression on
the same features and C, C is chosen by validation or cross-validation, fine-tuning starts at the probe's
validation accuracy, ``auto`` stops a fine-tune that does not beat the probe, and the run is sized to the data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from test_finetune import make_folder

from callbacks.finetune_strategies import budget
from callbacks.finetuning import FineTuning
from zoo import ImageClassifier
from zoo.data import ImageFolderDataModule
from zoo.optim import OptimizerConfig
from zoo.probe import C_GRID, fit_head

ARCH = "timm/test_efficientnet"


def datamodule(root: Path, **kw) -> ImageFolderDataModule:
    options = dict(
        image_size=32, crop_pct=1.0, num_workers=0, batch_size=8, val_fraction=0.25, test_fraction=0.25
    )
    return ImageFolderDataModule(str(root), **{**options, **kw})


def fit(model, dm, *callbacks, max_epochs: int = 1) -> Trainer:
    trainer = Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )
    dm.set_model_config(model.pretrained_data_config())  # preprocess auto, as the CLI hands it over
    trainer.fit(model, dm)
    return trainer


@torch.no_grad()
def features_and_probs(model: ImageClassifier, dm: ImageFolderDataModule, split: str):
    """Pre-logits features (timm's own ``forward_head(pre_logits=True)``) and the model's softmax of ``split``."""
    model.eval()
    _, evaluate = dm.transforms()
    ds = dm.splits[split]
    x = torch.stack([evaluate(ds.load(path)) for path, _ in ds.samples])
    x, _ = dm.on_after_batch_transfer((x, None), 0)  # the data module's own normalisation
    net = model.model
    feats = net.forward_head(net.forward_features(x), pre_logits=True)
    return feats.numpy(), model(x).softmax(-1).numpy(), np.array(ds.targets)


@pytest.mark.parametrize("classes", [2, 3])
def test_probe_head_predicts_what_sklearn_predicts_on_the_same_features_and_C(tmp_path, classes):
    root = make_folder(tmp_path / "pets", per_class=12)
    for extra in ("cat", "dog", "owl")[classes:]:
        for f in (root / extra).iterdir():
            f.unlink()
        (root / extra).rmdir()
    torch.manual_seed(0)
    model = ImageClassifier(ARCH, num_classes=classes)
    dm = datamodule(root)
    ft = FineTuning("linear")
    fit(model, dm, ft)
    train_x, _, train_y = features_and_probs(model, dm, "train")
    test_x, probs, _ = features_and_probs(model, dm, "test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = LogisticRegression(C=ft.probed["C"], max_iter=2000).fit(train_x, train_y)
    assert np.abs(probs - reference.predict_proba(test_x)).max() < 1e-4


def blobs(n_per_class: int, dim: int = 16, classes: int = 3, seed: int = 0, spread: float = 2.0):
    centres = np.random.default_rng(0).normal(0, 1, (classes, dim))  # one problem; ``seed`` draws its samples
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + rng.normal(0, spread, (len(y), dim)), y


def test_C_is_chosen_by_validation_top1_when_there_is_a_validation_split():
    x, y = blobs(30)
    vx, vy = blobs(30, seed=1)
    got = fit_head(x, y, 3, vx, vy)
    scores = []
    for c in C_GRID:  # an independent search: one plain fit per C
        model = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        proba = model.predict_proba(vx)
        scores.append((-(proba.argmax(1) == vy).mean(), -np.log(proba[np.arange(len(vy)), vy]).mean()))
    best = min(range(len(C_GRID)), key=lambda i: (round(scores[i][0], 9), scores[i][1]))
    assert C_GRID[best] == got.C and "validation split (90 images)" in got.how
    assert got.score == pytest.approx(-scores[best][0])


def test_C_is_chosen_by_cross_validation_without_a_validation_split_and_views_share_a_fold():
    x, y = blobs(6, spread=3.0)
    views = np.concatenate([x, x + 0.01])  # two "views" of each image
    labels, groups = np.concatenate([y, y]), np.tile(np.arange(len(y)), 2)
    got = fit_head(views, labels, 3, groups=groups, folds=3)
    assert "3-fold cross-validation" in got.how
    folds = list(StratifiedGroupKFold(3, shuffle=True, random_state=0).split(views, labels, groups))
    assert all(not set(groups[tr]) & set(groups[te]) for tr, te in folds)  # no image on both sides
    mean_top1 = []
    for c in C_GRID:
        accs = [LogisticRegression(C=c, max_iter=2000).fit(views[tr], labels[tr]).score(views[te], labels[te])
                for tr, te in folds]  # fmt: skip
        mean_top1.append(np.mean(accs))
    assert max(mean_top1) == pytest.approx(got.score)
    assert mean_top1[list(C_GRID).index(got.C)] == pytest.approx(max(mean_top1))


def test_budget_sizes_small_sets_by_steps_and_keeps_the_epochs_of_large_ones():
    tiny = budget(20, train=False)
    assert (tiny.batch_size, tiny.steps_per_epoch, tiny.epochs) == (20, 1, 1)
    assert (
        tiny.why
        == "20 training images: batch 20 (all of them), 1 step an epoch; the linear probe is the whole training (1 epoch)"
    )
    small = budget(100)  # batch 32 → 3 steps an epoch: 100 epochs for 300 steps, after the probe's
    assert (small.batch_size, small.steps_per_epoch, small.epochs, small.steps) == (32, 3, 101, 300)
    assert "1 probe epoch + 100 epochs of training = 300 steps (at least 300 steps)" in small.why
    large = budget(10_000)  # 312 steps an epoch: the default 10 epochs are plenty
    assert (large.batch_size, large.steps_per_epoch, large.epochs, large.steps) == (32, 312, 11, 3120)
    assert "(10 epochs)" in large.why
    ddp = budget(40, world_size=4)  # 10 images a device: a batch of 10, never one no device can fill
    assert (ddp.batch_size, ddp.steps_per_epoch) == (10, 1)
    given = budget(100, batch_size=7, epochs=4)  # what the user set is kept
    assert (given.batch_size, given.epochs, given.steps) == (7, 4, 3 * 14)
    assert "4 epochs as given" in given.why


def test_a_tiny_folder_holds_no_validation_split_and_says_why(tmp_path, caplog):
    dm = datamodule(
        make_folder(tmp_path / "few", per_class=10), min_per_class=5, val_fraction=0.2, test_fraction=0.1
    )
    with caplog.at_level("INFO"):
        dm.setup("fit")
    assert set(dm.splits) == {"train", "test"} and len(dm.splits["train"]) == 27
    assert "No validation split" in caplog.text and "min_per_class 5" in caplog.text
    enough = datamodule(make_folder(tmp_path / "more", per_class=40), min_per_class=5, val_fraction=0.2)
    enough.setup("fit")
    assert set(enough.splits) == {"train", "val", "test"}


class ValTop1(Callback):
    def __init__(self):
        self.by_epoch = {}

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.by_epoch[trainer.current_epoch] = float(trainer.callback_metrics["val/top1"])


def test_fine_tuning_starts_from_the_probe_and_its_validation_accuracy(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=12)
    torch.manual_seed(0)
    model = ImageClassifier(ARCH, num_classes=3, backbone_lr_scale=0.1)
    ft, seen = FineTuning("freeze_unfreeze", warmup=0), ValTop1()
    trainer = fit(model, datamodule(root), ft, seen, max_epochs=2)
    assert seen.by_epoch[0] == pytest.approx(ft.probed["score"], abs=1e-6)  # the probe's own validation top-1
    assert trainer.global_step == 2 * trainer.num_training_batches  # the probe's epoch counts its batches
    assert [g["name"] for g in trainer.optimizers[0].param_groups] == ["head", "backbone"]


def test_auto_stops_a_fine_tune_that_does_not_beat_the_probe(tmp_path, caplog):
    root = make_folder(tmp_path / "pets", per_class=24)
    torch.manual_seed(0)
    weights = tmp_path / "weights.pth"  # "pretrained" weights: a small timm network's, saved as a file
    torch.save(ImageClassifier(ARCH, num_classes=3).model.state_dict(), weights)
    wild = OptimizerConfig(name="momentum", lr=30.0)  # fine-tuning at an absurd lr can only do worse
    model = ImageClassifier(ARCH, num_classes=3, pretrained_path=str(weights), optimizer=wild)
    ft, seen = FineTuning("auto", trial=0.2, warmup=0), ValTop1()
    dm = datamodule(root, val_fraction=0.25, test_fraction=0.0, min_per_class=5)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/top1", mode="max")
    with caplog.at_level("INFO"):
        trainer = fit(model, dm, ft, seen, best, max_epochs=6)
    assert ft.resolved == "freeze_unfreeze" and ft.trial_epochs == 1
    assert trainer.current_epoch == 2  # epoch 0 the probe, epoch 1 the trial, then stopped
    assert seen.by_epoch[1] <= seen.by_epoch[0]
    assert "does not beat the probe" in caplog.text
    assert Path(best.best_model_path).name.startswith("epoch=0-")  # the probe's checkpoint stays the best
