"""End-of-fit report on the validation split: confusion matrix, per-class accuracy, misclassified images.

Files go to the run's directory (always); the same figures and tables go to W&B when a ``WandbLogger``
is attached. Under DDP the confusion matrix is summed over every process (torchmetrics syncs it) and the
grid shows the mistakes found by global rank 0.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.classification import MulticlassConfusionMatrix

from zoo.loggers import run_dir

# W&B tables hold 10,000 rows; a confusion chart has one row per (true, predicted) pair
WANDB_CHART_MAX_CLASSES = 100
PLOT_LABELS_UP_TO = 50
PLOT_MAX_INCHES = 24.0


def _first_loader(loaders):
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


class ClassificationReport(Callback):
    """M[i, j] = #(true class i, predicted j) over the validation split; accuracy_c = M[c, c] / Σ_j M[c, j].

    At the end of ``fit`` the final weights classify the validation images once more (in eval mode, the
    batches Lightning validates on) and the callback writes ``confusion_matrix.csv``/``.png``,
    ``per_class_accuracy.csv`` and ``misclassified.png``/``.csv`` (up to ``max_images`` mistakes).

    Args:
        max_images: mistakes in the grid (0: no grid).
        annotate_up_to: write the counts in the confusion-matrix cells up to this many classes.
    """

    def __init__(self, max_images: int = 32, annotate_up_to: int = 30):
        self.max_images = max_images
        self.annotate_up_to = annotate_up_to
        self.confusion: torch.Tensor | None = None
        self.files: dict[str, Path] = {}

    @torch.no_grad()
    def on_train_end(self, trainer, pl_module) -> None:
        loader = _first_loader(trainer.val_dataloaders)
        if loader is None:
            return
        limits = trainer.num_val_batches
        limit = limits[0] if isinstance(limits, list) and limits else limits
        limit = len(loader) if limit is None or math.isinf(limit) else int(limit)
        was_training = pl_module.training
        pl_module.eval()
        metric, mistakes = None, []
        for batch_idx, batch in enumerate(loader):
            if batch_idx >= limit:
                break
            x, y = trainer.strategy.batch_to_device(batch)[:2]
            with trainer.precision_plugin.val_step_context():
                logits = pl_module(x)
            if metric is None:
                metric = MulticlassConfusionMatrix(logits.shape[-1]).to(pl_module.device)
            metric.update(logits, y)
            if len(mistakes) < self.max_images:
                probs = logits.float().softmax(-1)
                conf, pred = probs.max(-1)
                for i in (pred != y).nonzero().flatten().tolist()[: self.max_images - len(mistakes)]:
                    mistakes.append((x[i].float().cpu(), int(y[i]), int(pred[i]), float(conf[i])))
        pl_module.train(was_training)
        if metric is None:
            return
        self.confusion = metric.compute().cpu()  # collective under DDP: every rank calls it
        if trainer.is_global_zero:
            names = getattr(trainer.datamodule, "class_names", None) or [
                str(c) for c in range(len(self.confusion))
            ]
            self._write(trainer, metric, names, mistakes)

    def _write(self, trainer, metric, names: list[str], mistakes: list) -> None:
        out = run_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        m = self.confusion.long()
        self.files["confusion_csv"] = out / "confusion_matrix.csv"
        with self.files["confusion_csv"].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ predicted", *names])
            writer.writerows([name, *row] for name, row in zip(names, m.tolist()))
        rows = per_class_accuracy(m, names)
        self.files["per_class_csv"] = out / "per_class_accuracy.csv"
        with self.files["per_class_csv"].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "images", "correct", "accuracy"])
            writer.writerows(rows)
        fig = confusion_figure(metric, self.confusion, names, self.annotate_up_to)
        self.files["confusion_png"] = out / "confusion_matrix.png"
        fig.savefig(self.files["confusion_png"], dpi=100, bbox_inches="tight")
        if mistakes:
            self.files["misclassified_png"] = out / "misclassified.png"
            _mistake_grid(mistakes, names).savefig(self.files["misclassified_png"], dpi=100)
            self.files["misclassified_csv"] = out / "misclassified.csv"
            with self.files["misclassified_csv"].open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["true", "predicted", "confidence"])
                writer.writerows([names[t], names[p], f"{c:.4f}"] for _, t, p, c in mistakes)
        total = int(m.sum())
        rank_zero_info(
            f"Report: {total - int(m.trace())} of {total} validation images misclassified; "
            f"confusion matrix, per-class accuracy and mistakes in {out}"
        )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self._to_wandb(logger, trainer.global_step, m, names, rows)

    def _to_wandb(self, logger: WandbLogger, step: int, m: torch.Tensor, names, rows) -> None:
        import wandb

        logged = {"val/confusion_matrix_image": wandb.Image(str(self.files["confusion_png"]))}
        if len(names) <= WANDB_CHART_MAX_CLASSES:
            cells = [[a, b, int(m[i, j])] for i, a in enumerate(names) for j, b in enumerate(names)]
            logged["val/confusion_matrix"] = wandb.plot_table(
                "wandb/confusion_matrix/v1",
                wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=cells),
                {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
                {"title": "Confusion matrix (validation)"},
            )
        logged["val/per_class_accuracy"] = wandb.Table(
            columns=["class", "images", "correct", "accuracy"], data=rows
        )
        if "misclassified_png" in self.files:
            logged["val/misclassified"] = wandb.Image(str(self.files["misclassified_png"]))
        logger.log_metrics(logged, step=step)


def confusion_figure(metric, confusion: torch.Tensor, names: list[str], annotate_up_to: int = 30):
    """The confusion matrix as a figure that grows with the classes up to ``PLOT_MAX_INCHES``; beyond
    ``PLOT_LABELS_UP_TO`` classes it drops the labels (1,000 classes would otherwise need 45,000 pixels)."""
    from matplotlib.figure import Figure

    n = len(names)
    side = min(max(5.0, 0.45 * n), PLOT_MAX_INCHES)
    fig = Figure(figsize=(side, side * 0.9))
    ax = fig.subplots()
    metric.plot(
        val=confusion, ax=ax, add_text=n <= annotate_up_to, labels=names if n <= PLOT_LABELS_UP_TO else None
    )
    if n > PLOT_LABELS_UP_TO:  # class indices every few classes instead of one unreadable label per class
        ticks = list(range(0, n, math.ceil(n / 20)))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_yticks(ticks, [str(t) for t in ticks])
    return fig


def per_class_accuracy(confusion: torch.Tensor, names: list[str]) -> list[list]:
    """``[class, images, correct, accuracy]`` per row of the confusion matrix (NaN for an absent class)."""
    totals, correct = confusion.sum(1).tolist(), confusion.diagonal().tolist()
    return [
        [name, int(n), int(k), (k / n) if n else float("nan")] for name, n, k in zip(names, totals, correct)
    ]


def _mistake_grid(mistakes: list, names: list[str]):
    """Images titled ``true → predicted (confidence)``, each rescaled to its own min..max for display."""
    from matplotlib.figure import Figure

    cols = min(8, len(mistakes))
    rows = math.ceil(len(mistakes) / cols)
    fig = Figure(figsize=(1.6 * cols, 1.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, true, pred, conf) in zip(axes.flat, mistakes):
        image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
        if image.shape[0] == 3:
            ax.imshow(image.permute(1, 2, 0).numpy())
        else:
            ax.imshow(image[0].numpy(), cmap="gray")
        ax.set_title(f"{names[true]} → {names[pred]} ({conf:.2f})", fontsize=8)
    fig.tight_layout()
    return fig
