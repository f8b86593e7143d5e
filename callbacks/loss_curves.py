"""Record the loss curves, plot them, and read them with :func:`zoo.training.diagnose.diagnose` at the end of fit."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from callbacks.report import FAST_PNG
from zoo.protocols import Guarded
from zoo.runtime.loggers import run_dir
from zoo.training.diagnose import Finding, History, diagnose


class LossCurveDiagnostics(Callback):
    """Train/val loss and top-1 at each validation → ``loss_curves.png`` and ``diagnosis.json`` in the log dir
    (and the W&B run's summary and a table, with that logger), and the lectures' reading of the curve (bug, lr too
    high/low, bad init, not converged, overfitting, underfitting).

    A point is one validation period: ``trainer.check_val_every_n_epoch`` epochs (one, unless the run validates
    less often, as a fine-tune of one-batch epochs does); its training loss is the mean over the period's steps.

    Args:
        plot: write the PNG (matplotlib).
    """

    def __init__(self, plot: bool = True):
        self.plot = plot
        self.history = History()
        # the epoch's first and summed training losses stay tensors on the device until the epoch's end: no
        # host sync per step (on a GPU, one would stall the CPU until the step's kernels are done)
        self._first: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._count = 0
        self.findings = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # a skipped step
            return
        loss = loss.detach().float()
        if self.history.initial_loss is None and self._first is None:
            self._first = loss
        self._sum = loss if self._sum is None else self._sum + loss
        self._count += 1

    def on_train_epoch_end(self, trainer, pl_module):
        every = trainer.check_val_every_n_epoch or 1
        last = trainer.should_stop or 0 < trainer.max_epochs <= trainer.current_epoch + 1
        if (trainer.current_epoch + 1) % every and not last:
            return  # the point goes on to the epoch that validates
        if self._first is not None:
            self.history.initial_loss, self._first = float(self._first), None
        if self._count:
            self.history.train_loss.append(float(self._sum) / self._count)
        self._sum, self._count = None, 0
        acc = trainer.callback_metrics.get("train/top1")
        if acc is not None:
            self.history.train_acc.append(float(acc))

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        if "val/loss" in metrics:
            self.history.val_loss.append(float(metrics["val/loss"]))
        if "val/top1" in metrics:
            self.history.val_acc.append(float(metrics["val/top1"]))

    def on_fit_end(self, trainer, pl_module):
        self.history.skipped_nonfinite = pl_module.guard.skipped if isinstance(pl_module, Guarded) else 0
        self.findings = diagnose(self.history)
        if not self.history.train_loss and trainer.global_step == 0:
            self.findings = [
                Finding(
                    "no_steps",
                    "no curve to read: no optimizer step was taken (a linear probe is fitted in closed form)",
                )
            ]
        if not trainer.is_global_zero:
            return
        log_dir = run_dir(trainer)
        for finding in self.findings:
            rank_zero_info(f"Loss curve: {finding.kind}: {finding.message}")
        log_dir.mkdir(parents=True, exist_ok=True)
        report = {"findings": [f.__dict__ for f in self.findings], "history": self.history.__dict__}
        (log_dir / "diagnosis.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if self.plot and self.history.train_loss:
            self._plot(log_dir / "loss_curves.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self._to_wandb(logger, trainer.global_step, log_dir / "loss_curves.png")

    def _to_wandb(self, logger: WandbLogger, step: int, png: Path) -> None:
        """The reading in the W&B run too: the summary's ``diagnosis/findings`` (the kinds) and
        ``diagnosis/<kind>`` (each message), and the table ``diagnosis/table`` (kind, message) with the plot."""
        summary = logger.experiment.summary
        summary["diagnosis/findings"] = ", ".join(f.kind for f in self.findings)
        for finding in self.findings:
            summary[f"diagnosis/{finding.kind}"] = finding.message
        rows = [[f.kind, f.message] for f in self.findings]
        logger.log_table("diagnosis/table", columns=["kind", "message"], data=rows, step=step)
        if png.is_file():
            logger.log_image("diagnosis/loss_curves", images=[str(png)], step=step)

    def _plot(self, path: Path) -> None:
        from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

        h = self.history
        fig = Figure(figsize=(10, 4))
        ax_loss, ax_acc = fig.subplots(1, 2)
        epochs = range(1, len(h.train_loss) + 1)  # validation periods (epochs, unless validated less often)
        ax_loss.plot(epochs, h.train_loss, label="train")
        if h.val_loss:
            ax_loss.plot(range(1, len(h.val_loss) + 1), h.val_loss, label="val")
        ax_loss.set(xlabel="epoch", ylabel="loss", title="; ".join(f.kind for f in self.findings))
        ax_loss.legend()
        if h.train_acc:
            ax_acc.plot(range(1, len(h.train_acc) + 1), h.train_acc, label="train")
        if h.val_acc:
            ax_acc.plot(range(1, len(h.val_acc) + 1), h.val_acc, label="val")
        ax_acc.set(xlabel="epoch", ylabel="top-1")
        if ax_acc.lines:  # (a run without accuracies: no empty legend, and no warning about one)
            ax_acc.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100, pil_kwargs=FAST_PNG)

    def state_dict(self):
        """The history, with the first loss of an epoch in progress, and that epoch's sum and count (a checkpoint
        mid-epoch resumes the same curve)."""
        history = dict(self.history.__dict__)
        if self._first is not None:
            history["initial_loss"] = float(self._first)
        epoch = {"sum": 0.0 if self._sum is None else float(self._sum), "count": self._count}
        return {"history": history, "epoch": epoch}

    def load_state_dict(self, state_dict):
        self.history = History(**state_dict["history"])
        epoch = state_dict.get("epoch", {"sum": 0.0, "count": 0})
        self._first, self._count = None, epoch["count"]
        self._sum = torch.tensor(epoch["sum"]) if self._count else None
