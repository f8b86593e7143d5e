"""What the per-step savings keep: metrics logged once per epoch equal the epoch's, train/loss on the steps the
logger writes, the guard's one-copy save restores every statistic, the report reuses the last validation only
when the weights are the final ones, and the terminal shows no v_num and no FLOPs of 0."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger

from callbacks.report import ClassificationReport
from callbacks.terminal import ZooModelSummary, ZooProgressBar
from zoo.data import DigitsDataModule
from zoo.training.guard import NonFiniteGuard
from zoo.training.module import ImageClassifier

EPOCHS, TRAIN_BATCHES = 2, 5


def fit(
    tmp_path: Path, *callbacks: Callback, **trainer_kwargs
) -> tuple[Trainer, ImageClassifier, DigitsDataModule]:
    seed_everything(0)
    data = DigitsDataModule(batch_size=64)
    model = ImageClassifier("convnet", num_classes=10, in_chans=1, model_kwargs={"widths": [8, 16]})
    options = dict(
        max_epochs=EPOCHS,
        limit_train_batches=TRAIN_BATCHES,
        logger=CSVLogger(tmp_path, name="run"),
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=2,
        num_sanity_val_steps=0,
    )
    trainer = Trainer(**{**options, **trainer_kwargs})
    trainer.fit(model, datamodule=data)
    return trainer, model, data


def rows(trainer: Trainer) -> list[dict[str, str]]:
    with (Path(trainer.logger.log_dir) / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_metrics_logged_once_per_epoch_are_the_whole_epochs(tmp_path):
    trainer, model, data = fit(tmp_path)
    x, y = data.splits["val"].normalize(data.splits["val"].x), data.splits["val"].y
    model.eval()
    with torch.no_grad():
        logits = model(x)
    # the last validation ran with the final weights: its figures are those of the whole split
    logged = trainer.callback_metrics
    assert float(logged["val/loss"]) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert float(logged["val/top1"]) == pytest.approx(
        float((logits.argmax(-1) == y).float().mean()), abs=1e-6
    )
    top5 = (logits.topk(5, -1).indices == y[:, None]).any(-1).float().mean()
    assert float(logged["val/top5"]) == pytest.approx(float(top5), abs=1e-6)
    # one epoch row each for the training and validation metrics, every epoch
    epochs = [r for r in rows(trainer) if r.get("train/top1")]
    assert [int(r["epoch"]) for r in epochs] == list(range(EPOCHS))
    assert len([r for r in rows(trainer) if r.get("val/top1")]) == EPOCHS


def test_train_loss_is_logged_on_the_steps_the_logger_writes_and_at_each_epochs_end(tmp_path):
    trainer, _, _ = fit(tmp_path)
    steps = sorted(int(r["step"]) for r in rows(trainer) if r.get("train/loss"))
    # log_every_n_steps=2 writes steps 1, 3, 5, 7, 9; each epoch's last batch (steps 4 and 9) is logged too,
    # but Lightning writes a step's values only on its own schedule: the CSV holds exactly its steps
    assert steps == [1, 3, 5, 7, 9]
    assert "train/loss" in trainer.callback_metrics  # for callbacks reading it at the epoch's end


class BadStatistics(torch.nn.Module):
    """A BatchNorm whose running variance overflows to inf on the batches marked bad, while the output (hence the
    loss) stays finite: only the saved copies can put the statistics back."""

    def __init__(self):
        super().__init__()
        self.bn1, self.bn2 = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
        self.bad = False

    def forward(self, x):
        out = self.bn2(self.bn1(x))
        if self.bad:
            self.bn2.running_var.fill_(float("inf"))
        return out


class Owner:
    """The module the guard reports to (a trainer of one process, no optimizer)."""

    trainer = type("T", (), {"world_size": 1, "optimizers": [], "should_stop": False})()
    current_epoch = global_step = 0


def test_guard_restores_every_statistic_of_a_bad_step_from_its_one_copy():
    model, guard = BadStatistics().train(), NonFiniteGuard(max_in_row=5)
    x = torch.randn(8, 3)
    saved = guard.save(model)
    assert guard.ok(Owner, model(x).sum(), saved)  # a good step keeps its update
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.bad = True
    saved = guard.save(model)
    with pytest.warns(UserWarning, match="step skipped"):
        assert not guard.ok(Owner, model(x).sum(), saved)
    after = model.state_dict()
    for key, value in before.items():  # means, variances and batch counts of both layers, as before the step
        assert torch.equal(after[key], value), key
    assert guard.skipped == 1
    model.eval()
    assert guard.save(model) is None  # no layer updates statistics in eval mode: nothing to copy


class EndWeights(Callback):
    """Changes the weights at the end of training, before the report runs (as an average or precise BN would)."""

    def on_train_end(self, trainer, pl_module):
        with torch.no_grad():
            pl_module.model.get_classifier().weight.mul_(-1.0)


def test_report_reuses_the_last_validation_only_for_the_final_weights(tmp_path, monkeypatch):
    passes = []
    original = ClassificationReport._classify
    monkeypatch.setattr(ClassificationReport, "_classify", lambda *a: passes.append(1) or original(*a))

    def expected(model, data):
        x, y = data.splits["val"].normalize(data.splits["val"].x), data.splits["val"].y
        model.eval()
        with torch.no_grad():
            pred = model(x).argmax(-1)
        return torch.bincount(y * 10 + pred, minlength=100).view(10, 10)

    report = ClassificationReport(max_images=4)
    _, model, data = fit(tmp_path / "a", report)
    assert passes == []  # the last epoch's validation was the final weights' classification
    assert torch.equal(report.confusion, expected(model, data))

    report = ClassificationReport(max_images=4)
    _, model, data = fit(tmp_path / "b", EndWeights(), report)
    assert passes == [1]  # the weights changed after the last validation: classified once more
    assert torch.equal(report.confusion, expected(model, data))


def test_progress_bar_drops_the_version_and_redraws_at_most_its_rate(monkeypatch):
    bar = ZooProgressBar(refresh_rate=10)
    clock = iter([0.0, 0.05, 0.12, 0.13, 0.13])
    monkeypatch.setattr("callbacks.terminal.time.monotonic", lambda: next(clock))
    shown = [bar._due(i, 10) for i in (0, 1, 2, 3)] + [bar._due(9, 10)]
    assert shown == [True, False, True, False, True]  # the loop's last batch is always shown


def test_progress_bar_shows_no_speed_of_zero_before_it_knows_one():
    from rich.progress import Progress

    columns = ZooProgressBar().configure_columns(None)
    speed = next(c for c in columns if "it/s" in str(c.render(_task(Progress, speed=4.0))))
    assert str(speed.render(_task(Progress, speed=None))) == ""  # one batch done: Lightning shows 0.00it/s
    assert str(speed.render(_task(Progress, speed=4.0))) == "4.00it/s"


def _task(progress_type, speed):
    """A Rich task after one batch (no speed yet), or after batches at ``speed`` a second (Rich's own estimate)."""
    now = [0.0]
    progress = progress_type(get_time=lambda: now[0])
    task_id = progress.add_task("Training", total=10)
    progress.update(task_id, advance=1)
    if speed is not None:
        now[0] = 1.0
        progress.update(task_id, advance=speed)
    return next(t for t in progress.tasks if t.id == task_id)


def test_summary_has_no_flops_column_of_zeros(capsys):
    data = [("Name", ["model"]), ("Type", ["ConvNet"]), ("Params", ["65.8 K"]), ("Mode", ["train"])]
    ZooModelSummary.summarize([*data, ("FLOPs", ["0"])], 65800, 65800, 0.26, {"train": 3, "eval": 0}, 0)
    out = capsys.readouterr().out
    assert "FLOPs" not in out and "ConvNet" in out and "65.8 K" in out
    ZooModelSummary.summarize(
        [*data, ("FLOPs", ["1.2 M"])], 65800, 65800, 0.26, {"train": 3, "eval": 0}, 1.2e6
    )
    assert "1.2 M" in capsys.readouterr().out  # counted (an example_input_array): shown


def test_only_lightnings_default_bar_and_summary_are_replaced():
    from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar

    from recipes.run_section import arrange

    run = {"progress_bar": ZooProgressBar(), "model_summary": ZooModelSummary()}
    mine = RichProgressBar(refresh_rate=3)
    out = arrange([mine, RichModelSummary()], [mine], run, loggers=[])
    assert out[0] is mine and out[1] is run["model_summary"]
    assert arrange([RichProgressBar()], [], run, loggers=[]) == [run["progress_bar"]]
