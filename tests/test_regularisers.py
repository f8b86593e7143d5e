"""The notes' regularisers as options: mixup and CutMix (timm's), label smoothing, EMA of the weights,
fractional max pooling at test time, and the shipped recipe that turns them on."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

import zoo
from callbacks import EMA
from zoo.training.mixup import build_mixup, mix_batch
from zoo.training.module import ImageClassifier

C = 4  # classes of the random data


class Recorder(Callback):
    """Each step's batch as the loader gave it, the model's input and logits, the loss, and the state after it."""

    def __init__(self):
        self.batches, self.inputs, self.logits, self.losses, self.states = [], [], [], [], []

    def setup(self, trainer, pl_module, stage):
        def hook(module, args, out):
            if module.training:
                self.inputs.append(args[0].detach().clone())
                self.logits.append(out.detach().clone())

        pl_module.model.register_forward_hook(hook)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((batch[0].clone(), batch[1].clone()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].detach())
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _fit(steps: int = 4, callbacks=(), **options) -> tuple[ImageClassifier, Recorder]:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 3, 8, 8), torch.randint(0, C, (64,)))
    model = ImageClassifier("convnet", num_classes=C, model_kwargs={"widths": [8], "depth": 1}, **options)
    recorder = Recorder()
    trainer = Trainer(
        max_steps=steps,
        callbacks=[recorder, *callbacks],
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=16))
    return model, recorder


def _ce(logits: torch.Tensor, y: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Label-smoothed cross-entropy by its formula: (1 − ε)·(−log p_y) + ε·mean_j(−log p_j)."""
    logp = logits.log_softmax(-1)
    return ((1 - eps) * -logp[torch.arange(len(y)), y] - eps * logp.mean(-1)).mean()


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_mixup_mixes_images_and_targets_by_one_lambda(eps):
    _, rec = _fit(mixup_alpha=1.0, label_smoothing=eps)
    lambdas = []
    for (x, y), mixed, logits, loss in zip(rec.batches, rec.inputs, rec.logits, rec.losses):
        xf, yf = x.flip(0), y.flip(0)  # timm pairs image i with image B − 1 − i
        d = x - xf
        lam = ((mixed - xf) * d).sum() / (d * d).sum()  # least squares λ of x̃ = λx + (1 − λ)x_f
        assert torch.allclose(mixed, lam * x + (1 - lam) * xf, atol=1e-5)
        expected = lam * _ce(logits, y, eps) + (1 - lam) * _ce(logits, yf, eps)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
        lambdas.append(lam.item())
    assert all(0 <= lam <= 1 for lam in lambdas) and len(set(lambdas)) == len(lambdas)  # a new λ each step


def test_cutmix_pastes_a_box_and_weighs_the_targets_by_its_area():
    _, rec = _fit(steps=6, cutmix_alpha=1.0)
    boxes = 0
    for (x, y), mixed, logits, loss in zip(rec.batches, rec.inputs, rec.logits, rec.losses):
        changed = (mixed != x).any(0).any(0)  # H×W: pixels taken from the paired image
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        area = 0
        if len(rows):
            r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            assert changed[r0:r1, c0:c1].all() and changed.sum() == (r1 - r0) * (c1 - c0)  # one rectangle
            assert torch.equal(mixed[:, :, r0:r1, c0:c1], x.flip(0)[:, :, r0:r1, c0:c1])
            area, boxes = int((r1 - r0) * (c1 - c0)), boxes + 1
        lam = 1 - area / 64  # λ = 1 − box area / image area
        expected = lam * _ce(logits, y) + (1 - lam) * _ce(logits, y.flip(0))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert boxes >= 3


def test_label_smoothing_alone_is_the_smoothed_cross_entropy():
    _, rec = _fit(steps=2, label_smoothing=0.2)
    for (_, y), logits, loss in zip(rec.batches, rec.logits, rec.losses):
        assert loss.item() == pytest.approx(_ce(logits, y, 0.2).item(), rel=1e-5)


def test_odd_batches_lose_one_image_and_bad_alphas_are_errors():
    mixup = build_mixup(1.0, 0.0, num_classes=C)
    x, y = torch.randn(5, 3, 8, 8), torch.arange(5) % C
    mixed, kept, soft = mix_batch(mixup, x, y)
    assert mixed.shape[0] == kept.shape[0] == soft.shape[0] == 4 and torch.equal(kept, y[:4])
    assert torch.allclose(soft.sum(1), torch.ones(4))
    assert build_mixup(0.0, 0.0) is None
    with pytest.raises(ValueError, match="mixup_alpha=-1.0 must be ≥ 0"):
        ImageClassifier(mixup_alpha=-1.0)
    with pytest.raises(ValueError, match="mixup_prob=1.5 must be a probability"):
        ImageClassifier(cutmix_alpha=1.0, mixup_prob=1.5)


def test_ema_averages_the_weights_as_the_formula_says():
    beta = 0.8
    model, rec = _fit(steps=6, callbacks=[EMA(decay=beta)])
    expected = dict(rec.states[0])  # θ̄_1 = θ_1
    for state in rec.states[1:]:  # θ̄_k = β·θ̄_{k−1} + (1 − β)·θ_k
        expected = {
            k: beta * expected[k] + (1 - beta) * v if v.is_floating_point() else v for k, v in state.items()
        }
    final = model.state_dict()
    floats = [k for k, v in final.items() if v.is_floating_point()]
    assert any("running_mean" in k for k in floats)  # BN statistics are averaged too
    for k in floats:
        assert torch.allclose(final[k], expected[k], atol=1e-6), k
    assert not torch.allclose(final["model.fc.weight"], rec.states[-1]["model.fc.weight"])
    with pytest.raises(ValueError, match="decay=1.0 must be in"):
        EMA(decay=1.0)


def test_fractional_max_pooling_is_random_in_training_and_fixed_at_test():
    torch.manual_seed(0)
    model = zoo.create_model(
        "convnet", num_classes=10, in_chans=1, pool="fractional", widths=(8, 8), drop_rate=0.0
    )
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model(x))
        assert not torch.equal(model.train()(x), model(x))


def test_regularised_recipe_trains_with_every_option_and_tests_the_average(zoo_cli):
    args = ["fit", "--recipe", "digits_regularised", "--trainer.max_epochs", "2"]
    args += ["--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"]
    assert zoo_cli(*args, *FAST_TRAINER) == 0
    run = Path("runs/digits_regularised/version_0")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert (hp["mixup_alpha"], hp["cutmix_alpha"], hp["label_smoothing"]) == (0.2, 1.0, 0.1)
    assert hp["optimizer"]["weight_decay"] == 5e-4 and hp["arch"] == "resnet20"
    # EMA: the checkpoint's weights are the average, the raw ones are kept beside them
    assert not torch.equal(
        ckpt["state_dict"]["model.fc.weight"], ckpt["current_model_state"]["model.fc.weight"]
    )
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["stochastic_depth/p_L"]) for r in rows if r.get("stochastic_depth/p_L")] == pytest.approx(
        [0.1, 0.1]
    )
    assert any(r.get("test/top1") for r in rows)
