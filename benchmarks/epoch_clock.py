"""The framework-tax benchmark's clock inside a ``zoo fit`` process: when each training epoch and its validation
start, and when the validation ends.

    zoo fit --recipe digits '--trainer.callbacks+={"class_path": "epoch_clock.EpochClock",
                                                   "init_args": {"path": "clock.json"}}'   (benchmarks/ on PYTHONPATH)

The span from one epoch's start to the next holds everything the epoch costs: training, validation, the
checkpoints written after it, logging and the progress bar (``train/epoch_time`` ends before the checkpoints:
Lightning runs checkpoint callbacks last). The plain loop notes the same three times.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class EpochClock(Callback):
    """Writes ``[[start, validation start, validation end], ...]`` (``time.perf_counter()``, one list per training
    epoch) to ``path`` (JSON) when training ends."""

    def __init__(self, path: str):
        self.path, self.epochs = Path(path), []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append([time.perf_counter()])

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.epochs and not trainer.sanity_checking:
            self.epochs[-1].append(time.perf_counter())

    on_validation_end = on_validation_start

    def on_train_end(self, trainer, pl_module) -> None:
        self.path.write_text(json.dumps(self.epochs))
