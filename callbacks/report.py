"""End-of-fit report on the validation split: confusion matrix, per-class accuracy, misclassified images.

Files go to the run's directory (always); the same figures and tables go to W&B when a ``WandbLogger``
is attached. Under DDP the confusion matrix is summed over every process (torchmetrics syncs it) and the
grid shows the mistakes found by global rank 0, with their heat maps computed there alone.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics.classification import MulticlassConfusionMatrix

from callbacks.device_batches import device_batches
from zoo.protocols import ClassNames, SplitData
from zoo.runtime.loggers import run_dir
from zoo.tools.cam import NoFeatureMap, heat_maps, overlay
from zoo.tools.sheet import FAST_PNG, contact_sheet, pixels, save

# W&B tables hold 10,000 rows; a confusion chart has one row per (true, predicted) pair
WANDB_CHART_MAX_CLASSES = 100
PLOT_LABELS_UP_TO = 50
PLOT_MAX_INCHES = 24.0


def _last_epoch(trainer) -> bool:
    """Whether the epoch under way is the run's last by its limits (a run stopped earlier gets a pass of its own)."""
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    batches = trainer.num_training_batches
    return max_steps > 0 and math.isfinite(batches) and trainer.global_step + batches >= max_steps


@torch.no_grad()
def _fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """The sum of each floating-point tensor of the module's state: any change of weights or statistics shows."""
    return torch.stack([t.float().sum() for t in module.state_dict().values() if t.is_floating_point()])


def _first_loader(loaders):
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


class ClassificationReport(Callback):
    """M[i, j] = #(true class i, predicted j) over the validation split; accuracy_c = M[c, c] / Σ_j M[c, j].

    At the end of ``fit`` the final weights classify the validation images (in eval mode, the batches Lightning
    validates on: the last validation epoch's predictions when it came after the last step, else a pass of
    its own) and the callback writes ``confusion_matrix.csv``/``.png``,
    ``per_class_accuracy.csv`` and ``misclassified.png``/``.csv`` (up to ``max_images`` mistakes). Each mistake
    in the grid is shown with its Grad-CAM heat maps (:mod:`zoo.tools.cam`) for the predicted and for the true class:
    where the network found the class it said, and where it looked for the one it should have said.

    Args:
        max_images: mistakes in the grid (0: no grid).
        annotate_up_to: write the counts in the confusion-matrix cells up to this many classes.
        heat_maps: draw the heat maps in the grid (a forward and backward pass per mistake and class).
    """

    def __init__(self, max_images: int = 32, annotate_up_to: int = 30, heat_maps: bool = True):
        self.max_images = max_images
        self.annotate_up_to = annotate_up_to
        self.heat_maps = heat_maps
        self.maps: torch.Tensor | None = None  # mistakes × (predicted, true) × H × W, in [0, 1]
        self.confusion: torch.Tensor | None = None
        self.files: dict[str, Path] = {}
        self._collecting = False
        self._collected: tuple | None = (
            None  # (weights' fingerprint, metric, mistakes) of the last validation
        )

    # --- the last validation epoch of the run: its predictions are the report's, with no pass of its own ---------
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._collected = None
        self._collecting = trainer.state.fn == "fit" and not trainer.sanity_checking and _last_epoch(trainer)
        self._metric, self._mistakes = None, []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not self._collecting or dataloader_idx != 0:
            return
        if not (torch.is_tensor(outputs) and outputs.dim() == 2):  # a module whose step returns no logits
            self._collecting = False
            return
        self._metric = self._add(self._metric, self._mistakes, outputs, *batch[:2])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._collecting and self._metric is not None:
            self._collected = (_fingerprint(pl_module), self._metric, self._mistakes)
        self._collecting = False

    @torch.no_grad()
    def on_fit_end(self, trainer, pl_module) -> None:  # (a run that ends with the probe has no on_train_end)
        if self._collected is not None and torch.equal(self._collected[0], _fingerprint(pl_module)):
            _, metric, mistakes = self._collected  # validated with the final weights and statistics
        else:  # trained, averaged or re-estimated since (e.g. precise BN at the end): classify once more
            metric, mistakes = self._classify(trainer, pl_module)
        self._collected = None
        if metric is None:
            return
        self.confusion = metric.compute().cpu()  # collective under DDP: every rank calls it
        if trainer.is_global_zero:
            dm = trainer.datamodule
            names = (dm.class_names if isinstance(dm, ClassNames) else None) or [
                str(c) for c in range(len(self.confusion))
            ]
            self._write(trainer, pl_module, metric, names, mistakes)

    def _classify(self, trainer, pl_module) -> tuple:
        """Classify the validation batches once more with the final weights (the run did not end on a validation)."""
        loader = _first_loader(trainer.val_dataloaders)
        data = trainer.datamodule
        if (
            loader is None
            and trainer.limit_val_batches
            and isinstance(data, SplitData)
            and data.has_split("val")
        ):
            loader = data.val_dataloader()  # a run that took no step (the linear probe alone) set up none
        if loader is None:
            return None, []
        limits = trainer.num_val_batches if trainer.val_dataloaders is not None else None
        limit = limits[0] if isinstance(limits, list) and limits else (None if limits == [] else limits)
        limit = len(loader) if limit is None or math.isinf(limit) else int(limit)
        was_training = pl_module.training
        pl_module.eval()
        metric, mistakes = None, []
        for batch in device_batches(
            trainer, loader, RunningStage.VALIDATING, limit
        ):  # normalised, never erased
            x, y = batch[:2]
            with trainer.precision_plugin.val_step_context():
                logits = pl_module(x)
            metric = self._add(metric, mistakes, logits, x, y)
        pl_module.train(was_training)
        return metric, mistakes

    @torch.no_grad()
    def _add(self, metric, mistakes: list, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        """Count a batch in the confusion matrix (made on its first batch) and keep its first mistakes."""
        if metric is None:
            metric = MulticlassConfusionMatrix(logits.shape[-1]).to(logits.device)
        metric.update(logits, y)
        if len(mistakes) < self.max_images:
            probs = logits.float().softmax(-1)
            conf, pred = probs.max(-1)
            for i in (pred != y).nonzero().flatten().tolist()[: self.max_images - len(mistakes)]:
                mistakes.append((x[i].float().cpu(), int(y[i]), int(pred[i]), float(conf[i])))
        return metric

    def _write(self, trainer, pl_module, metric, names: list[str], mistakes: list) -> None:
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
        fig.savefig(self.files["confusion_png"], dpi=100, bbox_inches="tight", pil_kwargs=FAST_PNG)
        if mistakes:
            self.maps = self._heat_maps(pl_module, mistakes) if self.heat_maps else None
            self.files["misclassified_png"] = out / "misclassified.png"
            save(_mistake_grid(mistakes, names, self.maps), self.files["misclassified_png"])
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

    @staticmethod
    def _heat_maps(pl_module, mistakes: list) -> torch.Tensor | None:
        """Grad-CAM of the predicted and of the true class for each mistake (N × 2 × H × W), or None, said why."""
        x = torch.stack([m[0] for m in mistakes]).to(pl_module.device)
        try:
            pred, true = (torch.tensor([m[k] for m in mistakes]) for k in (2, 1))
            return torch.stack([heat_maps(pl_module, x, pred), heat_maps(pl_module, x, true)], 1)
        except (ImportError, NoFeatureMap, RuntimeError) as err:  # an extra: the report is written without it
            rank_zero_info(f"Report: the misclassified images without heat maps: {err}")
            return None

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


def _mistake_grid(mistakes: list, names: list[str], maps: torch.Tensor | None = None):
    """Images titled ``true → predicted (confidence)``, each rescaled to its own min..max for display; with
    ``maps``, beside each its heat map for the predicted class and for the true class."""
    cells, titles = [], []
    for k, (image, true, pred, conf) in enumerate(mistakes):
        title = f"{names[true]} → {names[pred]} ({conf:.2f})"
        if maps is None:
            cells.append([pixels(image)])
        else:
            cells.append([pixels(image), overlay(image, maps[k, 0]), overlay(image, maps[k, 1])])
            title += f"\nimage · where {names[pred]} · where {names[true]}"
        titles.append(title)
    return contact_sheet(cells, titles, cols=8 if maps is None else 4)
