"""End-of-fit classification report and epoch throughput, on a short real digits run."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from sklearn.metrics import confusion_matrix

from callbacks.decay import CosineDecay
from callbacks.lr_plot import LRPlot
from callbacks.report import ClassificationReport, per_class_accuracy
from callbacks.throughput import EpochThroughput
from zoo.data import DigitsDataModule
from zoo.training.module import ImageClassifier

EPOCHS = 2


def _rows(path: Path) -> list[list[str]]:
    with path.open() as f:
        return list(csv.reader(f))


def _metrics(log_dir: Path) -> list[dict[str, str]]:
    with (log_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Two epochs of the convnet on digits (cosine lr) with the report (8 mistakes at most), the throughput
    meter and the lr plot."""
    seed_everything(0)
    root = tmp_path_factory.mktemp("report")
    data = DigitsDataModule(batch_size=64)
    model = ImageClassifier("convnet", num_classes=10, in_chans=1, model_kwargs={"widths": [16, 32]})
    report, meter, lr_plot = ClassificationReport(max_images=8), EpochThroughput(), LRPlot()
    trainer = Trainer(
        max_epochs=EPOCHS,
        logger=CSVLogger(root, name="digits"),
        callbacks=[report, meter, lr_plot, CosineDecay(unit="step")],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=5,
    )
    trainer.fit(model, datamodule=data)
    return SimpleNamespace(
        trainer=trainer,
        model=model,
        data=data,
        report=report,
        meter=meter,
        lr_plot=lr_plot,
        log_dir=Path(trainer.logger.log_dir),
    )


def test_confusion_matrix_equals_sklearn_on_the_final_model(fitted):
    model, data, report, log_dir = fitted.model, fitted.data, fitted.report, fitted.log_dir
    x = data.splits["val"].x
    y = data.splits["val"].y
    norm = data.splits["val"].normalize
    model.eval()
    with torch.no_grad():
        preds = model(norm(x)).argmax(-1)
    expected = confusion_matrix(y.numpy(), preds.numpy(), labels=list(range(10)))
    written = np.array([[int(v) for v in row[1:]] for row in _rows(log_dir / "confusion_matrix.csv")[1:]])
    assert (written == expected).all()
    assert (report.confusion.numpy() == expected).all()
    # rows are the true classes: each row sums to that class's count in the validation split
    assert (written.sum(1) == np.bincount(y.numpy(), minlength=10)).all()
    assert (log_dir / "confusion_matrix.png").stat().st_size > 1000


def test_report_accuracy_is_the_last_logged_val_top1(fitted):
    report, log_dir = fitted.report, fitted.log_dir
    m = report.confusion
    last_top1 = [float(r["val/top1"]) for r in _metrics(log_dir) if r.get("val/top1")][-1]
    assert float(m.trace() / m.sum()) == pytest.approx(last_top1, abs=1e-6)


def test_per_class_accuracy_is_diagonal_over_row_sum(fitted):
    report, log_dir = fitted.report, fitted.log_dir
    m = report.confusion
    rows = _rows(log_dir / "per_class_accuracy.csv")
    assert rows[0] == ["class", "images", "correct", "accuracy"]
    for c, (name, images, correct, acc) in enumerate(rows[1:]):
        assert name == str(c)
        assert int(images) == int(m[c].sum()) and int(correct) == int(m[c, c])
        assert float(acc) == pytest.approx(int(m[c, c]) / int(m[c].sum()))


def test_misclassified_grid_lists_real_mistakes(fitted):
    report, log_dir = fitted.report, fitted.log_dir
    m = report.confusion
    mistakes = _rows(log_dir / "misclassified.csv")[1:]
    assert len(mistakes) == min(8, int(m.sum() - m.trace()))
    assert all(true != pred and 0 < float(conf) <= 1 for true, pred, conf in mistakes)
    assert (log_dir / "misclassified.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_mistake_in_the_grid_has_heat_maps_for_the_predicted_and_the_true_class(fitted):
    from PIL import Image

    maps, log_dir = fitted.report.maps, fitted.log_dir
    mistakes = _rows(log_dir / "misclassified.csv")[1:]
    assert maps.shape == (len(mistakes), 2, 8, 8)  # one map per class asked, at the digits' 8 × 8
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(not torch.equal(a, b) for a, b in maps)  # two classes, two different maps
    width, height = Image.open(log_dir / "misclassified.png").size
    assert width > height  # 4 mistakes of 3 panels to a row: the image, where predicted, where true


def test_throughput_counts_every_training_image(fitted):
    data, meter, log_dir = fitted.data, fitted.meter, fitted.log_dir
    last = meter.last
    assert last["images"] == len(data.splits["train"])
    assert 0 < last["train_time"] <= last["epoch_time"]
    logged = [r for r in _metrics(log_dir) if r.get("train/images_per_sec")]
    assert len(logged) == EPOCHS
    assert all(r.get("train/epoch_time") for r in logged)
    # one process: images/s is this epoch's images over its training time
    assert float(logged[-1]["train/images_per_sec"]) == pytest.approx(
        last["images"] / last["train_time"], rel=1e-5
    )
    assert float(logged[-1]["train/epoch_time"]) == pytest.approx(last["epoch_time"], rel=1e-5)


def test_per_class_accuracy_closed_form_and_absent_class():
    m = torch.tensor([[3, 1, 0], [2, 2, 0], [0, 0, 0]])
    rows = per_class_accuracy(m, ["a", "b", "c"])
    assert rows[0] == ["a", 4, 3, 0.75] and rows[1] == ["b", 4, 2, 0.5]
    assert rows[2][:3] == ["c", 0, 0] and math.isnan(rows[2][3])


def test_no_validation_data_writes_no_report(tmp_path):
    data = DigitsDataModule(batch_size=64)
    model = ImageClassifier("convnet", num_classes=10, in_chans=1, model_kwargs={"widths": [8]})
    report = ClassificationReport()
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path, name="none"),
        callbacks=[report],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=data)
    assert report.confusion is None and report.files == {}
    assert not list(tmp_path.rglob("confusion_matrix.csv"))


def test_lr_plot_records_the_lr_of_every_step(fitted):
    (points,) = fitted.lr_plot.lrs.values()  # one param group
    T = fitted.trainer.global_step
    assert len(points) == T
    # the notes' cosine decay ½α0(1 + cos(πt/T)), α0 = 0.1, at step t = 0..T-1
    for t, (_, lr) in enumerate(points):
        assert lr == pytest.approx(0.05 * (1 + math.cos(math.pi * t / T)), rel=1e-9, abs=1e-15)
    epochs = [x for x, _ in points]
    assert epochs[0] == 0 and epochs == sorted(epochs) and epochs[-1] < EPOCHS
    assert (fitted.log_dir / "lr_schedule.png").read_bytes()[:4] == b"\x89PNG"


def test_confusion_figure_stays_bounded_for_imagenet_sized_label_sets():
    from torchmetrics.classification import MulticlassConfusionMatrix

    from callbacks.report import PLOT_MAX_INCHES, confusion_figure

    names = [f"class{i}" for i in range(1000)]
    fig = confusion_figure(MulticlassConfusionMatrix(1000), torch.zeros(1000, 1000, dtype=torch.long), names)
    width, height = fig.get_size_inches()
    assert width <= PLOT_MAX_INCHES and height <= PLOT_MAX_INCHES
    assert len(fig.axes[0].get_xticklabels()) <= 20  # class indices, not 1,000 overlapping labels
    small = confusion_figure(MulticlassConfusionMatrix(3), torch.eye(3, dtype=torch.long), ["a", "b", "c"])
    assert [t.get_text() for t in small.axes[0].get_xticklabels()] == ["a", "b", "c"]


def test_lr_plot_keeps_at_most_max_points_on_an_even_grid_of_steps(tmp_path):
    seed_everything(0)
    lr_plot = LRPlot(max_points=8)
    trainer = Trainer(
        max_epochs=EPOCHS,
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[lr_plot, CosineDecay(unit="step")],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    model = ImageClassifier("convnet", num_classes=10, in_chans=1, model_kwargs={"widths": [8], "depth": 1})
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=64))
    (points,) = lr_plot.lrs.values()
    T, stride = trainer.global_step, lr_plot.state_dict()["stride"]
    assert T == 34 and stride == 8 and len(points) == 5  # steps 0, 8, …, 32 of 34
    for k, (x, lr) in enumerate(points):  # the cosine's value at step k·stride, and its place in epochs
        assert lr == pytest.approx(0.05 * (1 + math.cos(math.pi * k * stride / T)), rel=1e-9, abs=1e-15)
        assert x == pytest.approx(k * stride / 17)
    resumed = LRPlot(max_points=8)
    resumed.load_state_dict(lr_plot.state_dict())
    assert resumed.lrs == lr_plot.lrs and resumed._first == lr_plot._first
    assert {k: v for k, v in resumed.state_dict().items() if k != "lrs"} == {
        k: v for k, v in lr_plot.state_dict().items() if k != "lrs"
    }
    (saved,) = lr_plot.state_dict()["lrs"].values()  # one tensor per group: no list for a checkpoint to walk
    assert saved.dtype == torch.float64 and saved.tolist() == [list(p) for p in points]
    old = LRPlot(max_points=8)  # a checkpoint written when the points were lists of pairs
    old.load_state_dict({**lr_plot.state_dict(), "lrs": {"all": [list(p) for p in points]}})
    assert old.lrs == {"all": points}


def test_lr_plot_thins_a_group_that_joined_mid_run_onto_the_same_grid():
    lr_plot = LRPlot(max_points=4)
    optimizer = torch.optim.SGD(
        [{"params": [torch.zeros(1, requires_grad=True)], "name": "backbone"}], lr=0.0
    )
    for step in range(41):
        if step == 5:  # an odd step: the head joins between two kept steps of stride 2
            optimizer.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "name": "head"})
        for group in optimizer.param_groups:
            group["lr"] = float(step)  # each point's lr says at which step it was kept
        lr_plot.on_before_optimizer_step(None, None, optimizer)
    stride = lr_plot.state_dict()["stride"]
    for name, points in lr_plot.lrs.items():
        steps = [int(lr) for _, lr in points]
        assert len(steps) <= 4 and all(s % stride == 0 for s in steps), (name, steps)
        assert steps == list(range(steps[0], steps[-1] + 1, stride)) and steps[-1] > 40 - stride
    assert [int(lr) for _, lr in lr_plot.lrs["head"]][0] >= 5
