"""Reading loss curves (the notes' pictures) and guarding against non-finite losses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER

from zoo.training.diagnose import History, diagnose


def kinds(h: History) -> set[str]:
    return {f.kind for f in diagnose(h)}


def test_good_curve_is_healthy():
    loss = [2.3 * math.exp(-0.5 * e) + 0.1 for e in range(20)]
    h = History(
        train_loss=loss,
        val_loss=[v + 0.05 for v in loss],
        initial_loss=2.4,
        train_acc=[0.9] * 20,
        val_acc=[0.88] * 20,
    )
    assert kinds(h) == {"healthy"}


def test_exploding_loss_means_lr_too_high():
    assert kinds(History(train_loss=[2.3, 3.0, 9.0], initial_loss=2.3)) == {"diverged"}
    assert kinds(History(train_loss=[2.3, float("nan")], initial_loss=2.3)) == {"diverged"}
    assert kinds(History(train_loss=[2.0, 1.9], initial_loss=2.3, skipped_nonfinite=3)) == {"diverged"}


def test_flat_loss_means_a_bug():
    assert kinds(History(train_loss=[2.30, 2.29, 2.30, 2.29], initial_loss=2.303)) == {"no_progress"}


def test_slow_linear_decrease_means_lr_too_low():
    loss = [2.3 - 0.04 * e for e in range(20)]
    assert "lr_too_low" in kinds(History(train_loss=loss, initial_loss=2.31))


def test_fast_drop_then_plateau_means_lr_too_high():
    loss = [1.5] + [1.45] * 19
    assert "lr_too_high" in kinds(History(train_loss=loss, initial_loss=2.3))


def test_slow_start_means_bad_initialisation():
    loss = [2.30, 2.29, 2.29, 2.28] + [2.28 * math.exp(-0.3 * e) for e in range(1, 17)]
    assert "bad_init" in kinds(History(train_loss=loss, initial_loss=2.30))


def test_rising_validation_loss_means_overfitting():
    train = [2.0 * math.exp(-0.3 * e) for e in range(20)]
    val = [2.0 * math.exp(-0.3 * e) for e in range(8)] + [0.2 + 0.1 * e for e in range(12)]
    assert "overfitting" in kinds(History(train_loss=train, val_loss=val, initial_loss=2.3))


def test_still_rising_accuracy_means_not_converged():
    loss = [2.3 * math.exp(-0.2 * e) + 0.3 for e in range(10)]
    acc = [0.5 + 0.04 * e for e in range(10)]
    h = History(train_loss=loss, val_loss=loss, initial_loss=2.4, train_acc=acc, val_acc=acc)
    assert "not_converged" in kinds(h)


def test_fit_writes_curves_and_diagnosis(zoo_cli):
    assert (
        zoo_cli(
            "fit",
            "--recipe",
            "digits",
            "--trainer.max_epochs",
            "3",
            "--test_after_fit",
            "false",
            *FAST_TRAINER,
        )
        == 0
    )
    run = Path("runs/digits/version_0")
    assert (run / "loss_curves.png").stat().st_size > 1000
    report = json.loads((run / "diagnosis.json").read_text())
    assert len(report["history"]["train_loss"]) == 3 and len(report["history"]["val_loss"]) == 3
    assert report["history"]["train_loss"][-1] < report["history"]["initial_loss"]
    assert report["findings"]


def test_nan_losses_are_skipped_and_training_stops_without_corrupting_checkpoints(zoo_cli, capsys):
    # an absurd learning rate drives the loss to inf/NaN within a few steps
    with pytest.raises(SystemExit) as done:
        zoo_cli(
            "fit",
            "--recipe",
            "digits",
            "--trainer.max_epochs",
            "3",
            "--model.optimizer.lr",
            "1e6",
            "--model.max_nonfinite_steps",
            "3",
            "--test_after_fit",
            "false",
            *FAST_TRAINER,
        )
    assert done.value.code == 3  # diverged: a job script can tell
    assert "error: the run diverged: 3 non-finite losses in a row stopped training" in capsys.readouterr().err
    run = Path("runs/digits/version_0")
    report = json.loads((run / "diagnosis.json").read_text())
    assert report["history"]["skipped_nonfinite"] >= 3
    assert report["findings"][0]["kind"] == "diverged"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())


def test_loss_gradient_is_p_minus_y():
    """Softmax cross-entropy: dL/dx = p − y (the notes' derivation), checked once on torch's loss."""
    x = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 3, 5, 7])
    torch.nn.functional.cross_entropy(x, y, reduction="sum").backward()
    expected = x.softmax(-1) - torch.nn.functional.one_hot(y, 10)
    assert torch.allclose(x.grad, expected.detach())


def test_the_training_loss_is_read_from_the_device_once_an_epoch_not_at_every_step():
    from callbacks.loss_curves import LossCurveDiagnostics

    reads = []

    class Counted(torch.Tensor):  # counts the reads of its value by the host (.item(), float())
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func in (torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.tolist):
                reads.append(func.__name__)
            return super().__torch_function__(func, types, args, kwargs or {})

    class Module:
        pass

    curves = LossCurveDiagnostics(plot=False)
    trainer = one_epoch_trainer()
    for value in (2.0, 1.0, 0.5):
        loss = torch.tensor(value).as_subclass(Counted)
        curves.on_train_batch_end(trainer, Module(), {"loss": loss}, None, 0)
    assert reads == []
    curves.on_train_epoch_end(trainer, Module())
    assert curves.history.initial_loss == 2.0 and curves.history.train_loss == [pytest.approx(3.5 / 3)]
    assert 0 < len(reads) <= 2


def test_a_checkpoint_mid_epoch_resumes_the_same_curve():
    """Killed in the first epoch and resumed from a mid-epoch checkpoint: the first loss and the epoch's mean
    are those of the whole epoch, not of the steps after the resume (else the curve reads as diverged)."""
    from callbacks.loss_curves import LossCurveDiagnostics

    class Module:
        pass

    trainer = one_epoch_trainer()
    before = LossCurveDiagnostics(plot=False)
    for value in (2.0, 1.0):
        before.on_train_batch_end(trainer, Module(), {"loss": torch.tensor(value)}, None, 0)
    state = torch.load(_saved(before.state_dict()), weights_only=True)
    after = LossCurveDiagnostics(plot=False)
    after.load_state_dict(state)
    after.on_train_batch_end(trainer, Module(), {"loss": torch.tensor(0.5)}, None, 0)
    after.on_train_epoch_end(trainer, Module())
    assert after.history.initial_loss == 2.0 and after.history.train_loss == [pytest.approx(3.5 / 3)]
    fresh = LossCurveDiagnostics(plot=False)  # a checkpoint at an epoch's end holds no epoch in progress
    fresh.load_state_dict(after.state_dict())
    fresh.on_train_epoch_end(trainer, Module())
    assert fresh.history.train_loss == [pytest.approx(3.5 / 3)]


def one_epoch_trainer():
    """What the curves read of a trainer: at epoch 0 of 1, validated every epoch, no metrics yet."""
    attrs = {"callback_metrics": {}, "check_val_every_n_epoch": 1, "should_stop": False, "max_epochs": 1}
    return type("Trainer", (), {**attrs, "current_epoch": 0})()


def _saved(state: dict):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer
