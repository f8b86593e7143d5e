"""The linear probe and the budget of the fine-tuning recipe: the head equals scikit-learn's logistic regression on
the same features and C (the stage probe's too, on the same concatenated features), C is chosen by validation or
cross-validation, fine-tuning starts at the probe's validation accuracy, ``auto`` ends at the probe when it is at
the ceiling and stops a fine-tune on patience, a one-batch set validates every tenth of its budget, and the run is
sized to the data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from test_finetune import make_folder

from callbacks.best_checkpoint import BestCheckpoint
from callbacks.finetune_strategies import Plateau, budget, trial_verdict
from callbacks.finetuning import FineTuning
from callbacks.label_check import LabelCheck
from callbacks.loss_curves import LossCurveDiagnostics
from zoo import ImageClassifier
from zoo.data import ImageFolderDataModule
from zoo.models.stage_head import StageHead
from zoo.training.optim import OptimizerConfig
from zoo.training.probe import C_GRID, block_scales, fit_head, fit_stages, stack_blocks

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
    ft = FineTuning("linear", probe_stages=False)
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
    assert (tiny.batch_size, tiny.steps_per_epoch, tiny.epochs, tiny.steps) == (20, 1, 0, 0)
    assert (
        tiny.why
        == "20 training images: batch 20 (all of them), 1 step an epoch; the linear probe is the whole training"
    )
    small = budget(100)  # batch 32 → 3 steps an epoch: 100 epochs for 300 steps, validated every 10
    assert (small.batch_size, small.steps_per_epoch, small.epochs, small.steps, small.val_every) == (
        32,
        3,
        100,
        300,
        10,
    )
    assert (
        "100 epochs after the probe = 300 steps (at least 300 steps); validation every 10 epochs (30 steps)"
        in small.why
    )
    one_batch = budget(30)  # one step an epoch: 300 epochs, a validation every 30 of them (10 in all)
    assert (one_batch.epochs, one_batch.val_every, one_batch.epochs // one_batch.val_every) == (300, 30, 10)
    large = budget(10_000)  # 312 steps an epoch: the default 10 epochs are plenty, each validated
    assert (large.batch_size, large.steps_per_epoch, large.epochs, large.steps, large.val_every) == (
        32,
        312,
        10,
        3120,
        1,
    )
    assert "(10 epochs)" in large.why and "validation every" not in large.why
    ddp = budget(40, world_size=4)  # 10 images a device: a batch of 10, never one no device can fill
    assert (ddp.batch_size, ddp.steps_per_epoch) == (10, 1)
    given = budget(100, batch_size=7, epochs=4)  # what the user set is kept
    assert (given.batch_size, given.epochs, given.steps) == (7, 4, 4 * 14)
    assert "4 epochs as given" in given.why
    steps = budget(100, max_steps=50)
    assert (steps.epochs, steps.steps) == (17, 50) and "50 steps as given" in steps.why


def test_the_trial_verdict_needs_a_gain_the_validation_split_can_show():
    assert "all 15 validation images correctly" in trial_verdict(1.0, 15)
    assert "misses 3 of 50" in trial_verdict(0.94, 50)  # even fixing all 3 could be chance
    assert trial_verdict(0.94, 200) is None  # 12 errors: room for a gain a sign test can tell


def test_patience_counts_validations_with_neither_a_lower_loss_nor_a_higher_top1():
    p = Plateau(patience=2)
    assert p.update(0.50, 0.80, 0)  # the probe's scores are the first best
    assert p.update(0.497, 0.80, 10) is False and p.waited == 1  # not 1 % lower: 0.497 > 0.99 × 0.50
    assert p.update(0.40, 0.80, 20) and p.waited == 0 and p.best_step == 20  # a lower loss alone counts
    assert p.update(0.45, 0.85, 30) and p.best_step == 30  # a higher top-1 alone counts
    assert not p.update(0.41, 0.85, 40) and not p.stalled
    assert not p.update(0.41, 0.84, 50) and p.stalled


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


class ValAtStart(Callback):
    """The network's validation top-1 just before its first optimizer step (after the probe)."""

    def on_train_start(self, trainer, pl_module):
        dm = trainer.datamodule
        _, probs, targets = features_and_probs(pl_module, dm, "val")
        self.top1 = float((probs.argmax(1) == targets).mean())
        pl_module.train()


def test_fine_tuning_starts_from_the_probe_and_its_validation_accuracy(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=12)
    torch.manual_seed(0)
    model = ImageClassifier(ARCH, num_classes=3, backbone_lr_scale=0.1)
    ft, start, seen = FineTuning("freeze_unfreeze", warmup=0, patience=0), ValAtStart(), ValTop1()
    trainer = fit(model, datamodule(root), ft, start, seen, max_epochs=2)
    # the probe's validation scores, from the features it was fitted on, are what the network scores
    assert start.top1 == pytest.approx(ft.probed["val_top1"], abs=1e-6)
    assert trainer.global_step == 2 * trainer.num_training_batches  # two training epochs after the probe
    assert sorted(seen.by_epoch) == [0, 1]
    assert [g["name"] for g in trainer.optimizers[0].param_groups] == ["head", "backbone"]


def noisy_folder(root: Path, per_class: int) -> Path:
    """Three classes a probe gets partly wrong: their colours drown in noise."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog", "owl")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(128 + 12 * (c - 1) + rng.normal(0, 60, (24, 24, 3)), 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{i}.png")
    return root


def pretrained(tmp_path: Path) -> str:
    """ "Pretrained" weights: a small timm network's, saved as a file."""
    weights = tmp_path / "weights.pth"
    torch.save(ImageClassifier(ARCH, num_classes=3).model.state_dict(), weights)
    return str(weights)


def test_auto_stops_a_fine_tune_on_patience_and_keeps_the_probe_as_best(tmp_path, caplog):
    root = noisy_folder(tmp_path / "pets", per_class=40)
    torch.manual_seed(0)
    wild = OptimizerConfig(name="momentum", lr=3.0)  # far too high to gain, not so high that it diverges
    model = ImageClassifier(ARCH, num_classes=3, pretrained_path=pretrained(tmp_path), optimizer=wild)
    ft, seen = FineTuning("auto", warmup=0, patience=2), ValTop1()
    dm = datamodule(root, val_fraction=0.25, test_fraction=0.0, min_per_class=5)
    best = BestCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/top1", mode="max")
    with caplog.at_level("INFO"):
        trainer = fit(model, dm, ft, seen, best, max_epochs=6)
    assert ft.resolved == "full" and ft.probed["val_top1"] < 0.85  # room for a gain to show
    assert sorted(seen.by_epoch) == [0, 1] and trainer.current_epoch == 2  # stopped after 2 validations
    assert "Fine-tuning stopped at step" in caplog.text and "than the probe" in caplog.text
    assert Path(best.best_model_path).name == "probe.ckpt"  # the probe's checkpoint stays the best
    assert torch.load(best.best_model_path, weights_only=True)["global_step"] == 0


def test_auto_ends_at_the_probe_when_it_is_at_the_ceiling(tmp_path, caplog):
    root = make_folder(tmp_path / "pets", per_class=40)  # colours a probe tells apart without an error
    model = ImageClassifier(ARCH, num_classes=3, pretrained_path=pretrained(tmp_path))
    ft = FineTuning("auto")
    dm = datamodule(root, val_fraction=0.25, test_fraction=0.0, min_per_class=5)
    best = BestCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/top1", mode="max")
    with caplog.at_level("INFO"):
        trainer = fit(model, dm, ft, best, max_epochs=-1)
    assert ft.probed["val_top1"] == 1.0 and ft.resolved == "linear"
    assert "Fine-tuning auto → linear: the probe classifies all 30 validation images correctly" in caplog.text
    assert trainer.global_step == 0 and Path(best.best_model_path).name == "probe.ckpt"
    assert float(best.best_model_score) == 1.0
    # resumed from its checkpoint, the run has nothing left to do: auto ended at the probe, and stays there
    again = Trainer(
        max_epochs=-1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        callbacks=[FineTuning("auto")],
    )
    again.fit(
        ImageClassifier(ARCH, num_classes=3, pretrained_path=pretrained(tmp_path)),
        dm,
        ckpt_path=best.best_model_path,
    )
    assert again.global_step == 0 and again.callbacks[0].resolved == "linear"


def test_a_one_batch_set_validates_every_tenth_of_its_budget(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=6)
    model = ImageClassifier(ARCH, num_classes=3, backbone_lr_scale=0.1)
    seen, curves = ValTop1(), LossCurveDiagnostics(plot=False)
    dm = datamodule(root, batch_size=None, val_fraction=0.5, test_fraction=0.0)
    trainer = fit(model, dm, FineTuning("full", patience=0), seen, curves, max_epochs=-1)
    assert trainer.num_training_batches == 1 and trainer.global_step == 300
    assert len(seen.by_epoch) == 10 and sorted(seen.by_epoch)[-1] == 299  # the last epoch validates too
    # the loss curves follow the cadence: a point per validation, its training loss the mean of 30 steps
    assert len(curves.history.train_loss) == len(curves.history.val_loss) == 10


def test_the_stage_probe_predicts_what_sklearn_predicts_on_the_same_concatenated_features(tmp_path):
    root = noisy_folder(tmp_path / "pets", per_class=16)
    torch.manual_seed(0)
    model = ImageClassifier(ARCH, num_classes=3, pretrained_path=pretrained(tmp_path)).eval()
    dm = datamodule(root)
    dm.set_model_config(model.pretrained_data_config())
    dm.setup("fit")
    stages = ["top", *model.stage_taps()]
    assert len(stages) == 3

    @torch.no_grad()
    def blocks(split):
        _, evaluate = dm.transforms()
        ds = dm.splits[split]
        x = torch.stack([evaluate(ds.load(path)) for path, _ in ds.samples])
        x, _ = dm.on_after_batch_transfer((x, None), 0)
        return (
            x,
            dict(zip(stages, (b.numpy() for b in model.probe_features(x, stages)))),
            np.array(ds.targets),
        )

    _, train, train_y = blocks("train")
    test_x, test, _ = blocks("test")
    chosen = tuple(stages)  # the top features and both stages below, side by side
    choice = fit_stages(train, train_y, 3, candidates=[chosen], Cs=[0.5], folds=3)
    model.use_stages(list(chosen), choice.fit)
    assert isinstance(model.model, StageHead) and model.hparams["model_kwargs"]["head_stages"] == list(chosen)
    with torch.no_grad():
        probs = model(test_x).softmax(-1).numpy()
    scales = block_scales([train[n] for n in chosen])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = LogisticRegression(C=0.5, max_iter=2000).fit(
            stack_blocks([train[n] for n in chosen], scales), train_y
        )
    expected = reference.predict_proba(stack_blocks([test[n] for n in chosen], scales))
    assert np.abs(probs - expected).max() < 1e-4
    # the checkpoint's hyper-parameters rebuild the same network: what zoo test / predict / export load
    rebuilt = ImageClassifier(**{k: v for k, v in model.hparams.items() if k != "pretrained_path"}).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt(test_x), model(test_x), atol=1e-6)


def test_the_stage_probe_keeps_the_top_features_unless_a_set_classifies_more_right():
    x, y = blobs(20, dim=8)
    vx, vy = blobs(20, dim=8, seed=1)
    noise = np.random.default_rng(3).normal(0, 1, (len(y), 4))  # a stage that knows nothing
    vnoise = np.random.default_rng(4).normal(0, 1, (len(vy), 4))
    choice = fit_stages({"top": x, "s": noise}, y, 3, {"top": vx, "s": vnoise}, vy)
    assert choice.stages == ("top",) and "no stage set classifies more images right" in choice.why
    signal = np.eye(3)[y] * 5 + np.random.default_rng(5).normal(
        0, 0.1, (len(y), 3)
    )  # a stage that knows it all
    vsignal = np.eye(3)[vy] * 5 + np.random.default_rng(6).normal(0, 0.1, (len(vy), 3))
    better = fit_stages({"top": x, "s": signal}, y, 3, {"top": vx, "s": vsignal}, vy)
    assert better.stages != ("top",) and better.scores[better.stages][0] > better.scores[("top",)][0]


def test_the_probe_reuses_the_features_of_the_label_check_in_a_single_process_run(tmp_path):
    root = noisy_folder(tmp_path / "pets", per_class=16)
    passes = []

    class Counted(ImageFolderDataModule):
        def feature_dataloader(self, split, *args, **kwargs):
            passes.append(split)
            return super().feature_dataloader(split, *args, **kwargs)

    model = ImageClassifier(ARCH, num_classes=3, pretrained_path=pretrained(tmp_path))
    dm = Counted(str(root), image_size=32, crop_pct=1.0, num_workers=0, batch_size=8, val_fraction=0.25)
    ft = FineTuning("linear")
    fit(model, dm, LabelCheck(check=True), ft)
    assert sorted(passes) == ["train", "val"]  # one pass over each split, the label check's
    assert ft.probed is not None and ft.probed["val_images"] == len(dm.splits["val"])
