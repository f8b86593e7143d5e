"""Fine-tuning strategies with a real Trainer on a generated image folder: frozen BatchNorm statistics, the plans
of every strategy, param groups and lrs of joining stages, and resuming before and after the unfreeze epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch.nn.modules.batchnorm import _BatchNorm

from callbacks import CosineDecay
from callbacks.finetune_strategies import choose, images_per_class, plan
from callbacks.finetuning import FineTuning
from zoo import ImageClassifier
from zoo.data import ImageFolderDataModule
from zoo.models.backbones import model_stages
from zoo.training.freeze import freeze, keep_frozen_eval, unfreeze
from zoo.training.optim import OptimizerConfig

ARCH = "timm/test_efficientnet"  # 100k parameters, BatchNorm in every stage
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


def make_folder(root: Path, per_class: int = 8, size: int = 24, seed: int = 0) -> Path:
    """One sub-folder per class of noisy PNG images in the class's colour."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("cat", "dog", "owl")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(COLOURS[c]) + rng.normal(0, 30, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("pets") / "pets")


def datamodule(root: Path) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        str(root),
        image_size=32,
        crop_pct=1.0,
        num_workers=0,
        batch_size=6,
        val_fraction=0.25,
        test_fraction=0.0,
    )


def classifier(**kw) -> ImageClassifier:
    kw = {"backbone_lr_scale": 0.1, "optimizer": OptimizerConfig(name="momentum", lr=0.05), **kw}
    return ImageClassifier(arch=ARCH, num_classes=3, **kw)


def trainer(callbacks, max_epochs: int = 1, **kw) -> Trainer:
    return Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def batchnorms(module):
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


# --- freezing helpers ---------------------------------------------------------------------------------------


def test_frozen_batchnorm_stays_in_eval_through_train_and_keeps_its_statistics():
    model = classifier()
    backbone = model.model.blocks
    freeze(backbone)
    model.train()  # Lightning and users call this; frozen layers must stay in eval mode
    assert all(not m.training for m in backbone.modules())
    assert model.model.classifier.training and model.model.bn1.training
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model(torch.randn(4, 3, 32, 32) * 3 + 1)  # a train-mode forward pass with very different statistics
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert not any(p.requires_grad for p in backbone.parameters())
    unfreeze(backbone)
    model.train()
    assert all(m.training for m in backbone.modules()) and all(p.requires_grad for p in backbone.parameters())
    model(torch.randn(4, 3, 32, 32) * 3 + 1)
    assert not torch.equal(before["0.0.bn1.running_mean"], backbone[0][0].bn1.running_mean)


def test_keep_frozen_eval_restores_only_frozen_modules():
    model = classifier().model
    freeze(model.conv_stem)
    model.train()
    assert model.conv_stem.training  # plain nn.Module.train does not know about freezing
    keep_frozen_eval(model)
    assert not model.conv_stem.training and model.bn1.training


# --- the plans ------------------------------------------------------------------------------------------------


def test_plans_of_each_strategy():
    stages = ["top", "middle", "stem"]
    assert plan("linear", stages) == []
    (full,) = plan("full", stages)
    assert (full.epoch, full.stages, full.name) == (0, ("top", "middle", "stem"), "backbone")
    (once,) = plan("freeze_unfreeze", stages, unfreeze_epoch=3)
    assert (once.epoch, once.name) == (3, "backbone")
    gradual = plan("gradual", stages, unfreeze_epoch=2, every=3, max_stages=2)
    assert [(j.epoch, j.stages, j.name) for j in gradual] == [
        (2, ("top",), "backbone/top"),
        (5, ("middle",), "backbone/middle"),
    ]
    with pytest.raises(ValueError, match=r"unfreeze_epoch=0 must be ≥ 1.*is `full`"):
        plan("freeze_unfreeze", stages, unfreeze_epoch=0)


def test_auto_choice_follows_the_transfer_learning_table():
    assert (
        choose(10, pretrained=True, validated=False)[0] == "linear"
    )  # too few to hold out a validation split
    assert choose(300, pretrained=True)[0] == "full"  # probe, then fine-tune if it beats the probe (LP-FT)
    strategy, why = choose(10, pretrained=True, validated=True)  # a val/ folder of its own: still very little
    assert strategy == "linear" and "very little data (under 25)" in why
    assert choose(5000, pretrained=True)[0] == "full"
    strategy, why = choose(10, pretrained=False)
    assert strategy == "full" and "no pretrained weights" in why
    assert "10 training images per class" in choose(10, pretrained=True, validated=False)[1]
    assert images_per_class([0, 0, 0, 1, 1, 2, 2, 2, 2]) == 3


def test_unknown_strategy_suggests_the_close_name():
    with pytest.raises(ValueError, match=r"unknown finetune.strategy 'freeze-unfreeze'.*'freeze_unfreeze'"):
        FineTuning("freeze-unfreeze")


# --- with a Trainer --------------------------------------------------------------------------------------------


def test_linear_fits_the_head_as_a_probe_and_leaves_the_frozen_backbone_untouched(folder):
    model = classifier()
    backbone = {k: v.clone() for k, v in model.model.state_dict().items() if not k.startswith("classifier.")}
    head = model.model.classifier.weight.detach().clone()
    seen_modes = []

    class Modes(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen_modes.append({m.training for m in batchnorms(pl_module.model)})

    fit = trainer([FineTuning("linear", probe_stages=False), Modes()], max_epochs=3)
    fit.fit(model, datamodule(folder))
    # the probe is the whole training, a phase before the first epoch, whatever max_epochs says
    assert fit.current_epoch == 0 and fit.global_step == 0 and not seen_modes
    after = model.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in backbone.items())  # weights, running stats, batch counts
    assert not torch.equal(head, model.model.classifier.weight)  # fitted by the probe ...
    optimizer = model.trainer.optimizers[0]
    assert {g["name"] for g in optimizer.param_groups} == {"head"}
    assert not optimizer.state  # ... without a single optimizer step


def test_freeze_unfreeze_adds_the_backbone_at_its_scaled_lr_with_a_warmup(folder):
    lrs = []

    class Lrs(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})

    model = classifier(optimizer=OptimizerConfig(name="momentum", lr=0.05, weight_decay=1e-4))
    ft = FineTuning("freeze_unfreeze", unfreeze_epoch=1, warmup=1)
    trainer([ft, Lrs()], max_epochs=3).fit(model, datamodule(folder))
    steps = len(lrs) // 3  # 3 training batches an epoch
    assert set(lrs[0]) == {"head", "head/no_decay"}
    assert set(lrs[steps]) == {"head", "head/no_decay", "backbone", "backbone/no_decay"}
    assert lrs[steps]["backbone"] == 0.0  # the warmup starts from 0 ...
    for i in range(steps):
        assert lrs[steps + i]["backbone"] == pytest.approx(0.05 * 0.1 * i / steps)  # ... linearly ...
    assert lrs[2 * steps]["backbone"] == pytest.approx(0.005)  # ... to 0.1×
    assert all(lr["head"] == pytest.approx(0.005) for lr in lrs)  # once the probe has fitted it, the head's
    # lr is the backbone's from the first step on
    assert all(p.requires_grad for p in model.model.parameters())
    assert all(m.training for m in batchnorms(model.model))


def test_gradual_unfreezes_stages_top_down_as_their_own_groups(folder):
    model = classifier()
    names = [n for n, _ in model_stages(model.model)[1:]]
    ft = FineTuning("gradual", unfreeze_epoch=1, every=1, stages=2, warmup=0, keep_bn_eval=True)
    trainer([ft], max_epochs=3).fit(model, datamodule(folder))
    groups = [g["name"] for g in model.trainer.optimizers[0].param_groups]
    assert groups == ["head", f"backbone/{names[0]}", f"backbone/{names[1]}"]
    stages = dict(model_stages(model.model))
    assert all(p.requires_grad for n in names[:2] for p in stages[n].parameters())
    assert not any(p.requires_grad for n in names[2:] for p in stages[n].parameters())
    model.train()
    assert not any(m.training for m in batchnorms(model.model))  # keep_bn_eval: unfrozen BN in eval too
    assert all(m.training for n in names[:2] for m in stages[n].modules() if not isinstance(m, _BatchNorm))


def test_unfreeze_after_the_last_epoch_is_an_error_naming_the_option(folder):
    with pytest.raises(ValueError, match=r"unfreezes backbone at epoch 3, but trainer.max_epochs=2"):
        trainer([FineTuning("freeze_unfreeze", unfreeze_epoch=3)], max_epochs=2).fit(
            classifier(), datamodule(folder)
        )


def test_strategies_that_add_groups_refuse_lbfgs(folder):
    model = classifier(optimizer=OptimizerConfig(name="lbfgs"), backbone_lr_scale=1.0)
    with pytest.raises(
        ValueError, match=r"freeze_unfreeze adds param groups mid-run, but L-BFGS takes one group"
    ):
        trainer([FineTuning("freeze_unfreeze")], max_epochs=2).fit(model, datamodule(folder))


# --- resuming --------------------------------------------------------------------------------------------------


class Record(Callback):
    """Per optimizer step: the param groups' names and lrs, and which parameters train."""

    def __init__(self):
        self.steps = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        groups = [(g["name"], g["lr"], len(g["params"])) for g in trainer.optimizers[0].param_groups]
        grads = tuple(p.requires_grad for p in pl_module.model.parameters())
        bn = tuple(m.training for m in batchnorms(pl_module.model))
        self.steps[trainer.global_step] = (groups, grads, bn)


def run(folder, tmp: Path, ckpt: str | None = None) -> Record:
    torch.manual_seed(0)
    record = Record()
    saves = ModelCheckpoint(dirpath=tmp, filename="{epoch}", save_top_k=-1, monitor=None)
    ft = FineTuning("freeze_unfreeze", unfreeze_epoch=1, warmup=1)
    trainer([ft, CosineDecay(), saves, record], max_epochs=3).fit(
        classifier(), datamodule(folder), ckpt_path=ckpt
    )
    return record


def test_resuming_before_or_after_the_unfreeze_restores_groups_lrs_and_frozen_state(folder, tmp_path):
    whole = run(folder, tmp_path / "whole")
    per_epoch = len(whole.steps) // 3  # the probe before epoch 0 takes no step
    groups_at_unfreeze = whole.steps[per_epoch][0]
    assert [n for n, _, _ in groups_at_unfreeze] == ["head", "backbone"]
    for epoch in (0, 1):  # checkpoints taken before and after the unfreeze at epoch 1
        ckpt = tmp_path / "whole" / f"epoch={epoch}.ckpt"
        saved = torch.load(ckpt, weights_only=True)
        assert len(saved["optimizer_states"][0]["param_groups"]) == (1 if epoch == 0 else 2)
        resumed = run(folder, tmp_path / f"from{epoch}", str(ckpt))
        first = (epoch + 1) * per_epoch
        assert sorted(resumed.steps) == list(range(first, 3 * per_epoch))
        for step, (groups, grads, bn) in resumed.steps.items():
            want_groups, want_grads, want_bn = whole.steps[step]
            assert [(n, k) for n, _, k in groups] == [(n, k) for n, _, k in want_groups], step
            assert [lr for _, lr, _ in groups] == pytest.approx([lr for _, lr, _ in want_groups], abs=1e-12)
            assert grads == want_grads and bn == want_bn, step


def test_resuming_with_another_strategy_is_a_clear_error(folder, tmp_path):
    run(folder, tmp_path)
    model = classifier()
    with pytest.raises(ValueError, match=r"fine-tuned with strategy 'freeze_unfreeze'.*--finetune.strategy"):
        trainer([FineTuning("linear")], max_epochs=3).fit(
            model, datamodule(folder), ckpt_path=str(tmp_path / "epoch=1.ckpt")
        )
