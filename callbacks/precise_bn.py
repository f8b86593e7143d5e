"""Precise BatchNorm: test-time statistics computed over the training set instead of the moving average.

Qinliang Su's lecture (docs/notes.md) gives two ways to fix BN's test-time μ and σ²: the moving average of the mini-batch statistics
(what BN keeps while training), or computing them "exactly over the whole training dataset, only once".
torch's ``torch.optim.swa_utils.update_bn`` does the second: it resets the running statistics, sets the
momentum to None (a cumulative average) and runs the training data through the model in train mode.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import RunningStage
from torch.optim.swa_utils import update_bn

from callbacks.device_batches import device_batches
from zoo.compat import batch_norm_base


class PreciseBN(Callback):
    """BN test statistics over the training set: μ = (1/N)·Σ_i h_i and σ² = mean over batches of their σ²_B.

    μ is the exact mean over all N images when the batches have equal sizes (the mean of equal-sized batch
    means; a smaller last batch counts as a whole one). Run before each validation while fitting (so
    checkpoints hold the precise statistics) and once more at the end of training if the last step had no
    validation. Under DDP the statistics are averaged over the processes. The batches are those the training
    step gets: through the data module's transfer hooks (:mod:`callbacks.device_batches`).

    Contract with :class:`~callbacks.snapshot.SnapshotEnsemble`: it calls :meth:`recompute` just before each
    snapshot is saved; a recompute at the step of the validation that follows is not repeated.

    Args:
        num_batches: training batches to use (None: the whole training split, a fresh pass of its loader).
        every_n_epochs: recompute before the validation of every n-th epoch.
    """

    def __init__(self, num_batches: int | None = None, every_n_epochs: int = 1):
        if num_batches is not None and num_batches < 1:
            raise ValueError(f"PreciseBN: num_batches={num_batches!r} must be ≥ 1 (or None: all)")
        if every_n_epochs < 1:
            raise ValueError(f"PreciseBN: every_n_epochs={every_n_epochs!r} must be ≥ 1")
        self.num_batches, self.every_n_epochs = num_batches, every_n_epochs
        self.updated_at_step: int | None = None
        self.updates = 0

    def recompute(self, trainer, pl_module) -> None:
        """Replace every BN layer's running statistics by those of the training data."""
        norms = [m for m in pl_module.modules() if isinstance(m, batch_norm_base()) and m.track_running_stats]
        if not norms:
            return
        dm = trainer.datamodule  # a fresh loader: iterating the fit loop's own would disturb its epoch
        loader = dm.train_dataloader() if dm is not None else trainer.train_dataloader
        # as the training step gets them: on the device, normalised (and augmented) by the data module's hooks
        batches = device_batches(trainer, loader, RunningStage.TRAINING, self.num_batches)
        with torch.no_grad():
            update_bn(batches, pl_module, device=pl_module.device)
        if trainer.world_size > 1:
            for m in norms:
                m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
                m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))
        self.updated_at_step = trainer.global_step
        self.updates += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        fresh = self.updated_at_step == trainer.global_step  # e.g. just done for a snapshot
        if trainer.state.fn == "fit" and not trainer.sanity_checking and due and not fresh:
            self.recompute(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.updated_at_step != trainer.global_step:
            self.recompute(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"updated_at_step": self.updated_at_step, "updates": self.updates}

    def load_state_dict(self, state_dict: dict) -> None:
        self.updated_at_step, self.updates = state_dict["updated_at_step"], state_dict["updates"]
