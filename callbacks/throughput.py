"""Wall time of each training epoch and training images per second, summed over every process.

Written here because Lightning's ``ThroughputMonitor`` reports windowed per-step rates (and asks for a
FLOP count), not the per-epoch figures one reads next to the loss curve.
"""

from __future__ import annotations

import time

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.data import extract_batch_size


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # count the queued GPU work in the time
    return time.perf_counter()


class EpochThroughput(Callback):
    """Log ``train/epoch_time`` = wall seconds of the epoch (validation included) and
    ``train/images_per_sec`` = Σ_ranks images_r / t_r, with t_r the rank's training time (validation excluded).

    ``last`` keeps the rank's own ``images``, ``train_time`` and ``epoch_time`` of the latest epoch.
    """

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self._start = self._val_start = 0.0
        self._val_time = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._images, self._val_time = 0, 0.0
        self._start = _now(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += extract_batch_size(batch)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = _now(pl_module.device)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self._start:
            self._val_time += _now(pl_module.device) - self._val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch_time = _now(pl_module.device) - self._start
        train_time = max(epoch_time - self._val_time, 1e-9)
        self.last = {"images": self._images, "train_time": train_time, "epoch_time": epoch_time}
        pl_module.log("train/epoch_time", epoch_time, sync_dist=True, reduce_fx="max")
        pl_module.log("train/images_per_sec", self._images / train_time, sync_dist=True, reduce_fx="sum")
