"""One line, a few steps into training, that says how long the run will take.

Written here because Lightning's progress bar times each epoch on its own: a fine-tune of one-batch epochs shows a
bar that starts again every step, and the length of the whole run is nowhere.
"""

from __future__ import annotations

import datetime
import math
import time

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

FORWARD_SHARE = 1 / 3  # a validation batch (forward only) against a training step (forward and backward)


class RunLength(Callback):
    """After ``after`` timed steps, T ≈ (steps left) × t_step + (validations left) × t_val, said once: t_step is
    the mean time of the steps after the first (which pays for start-up), t_val the first validation's time when
    one ran, else ``FORWARD_SHARE`` × t_step per validation batch.

    Args:
        after: training steps timed before the line is printed (0: no line).
    """

    def __init__(self, after: int = 5):
        self.after = after
        self.said = False
        self._marks: list[float] = []
        self._val_time: float | None = None
        self._val_start = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.said or not self.after:
            return
        self._marks.append(time.perf_counter())
        if len(self._marks) <= self.after:
            return
        self.said = True
        step = (self._marks[-1] - self._marks[0]) / (len(self._marks) - 1)
        left = trainer.estimated_stepping_batches - trainer.global_step
        if not math.isfinite(left) or left <= 0:
            return
        checks, per_check = self._validations_left(trainer), self._val_time
        if per_check is None:
            per_check = FORWARD_SHARE * step * _val_batches(trainer)
        total = left * step + checks * per_check
        ends = datetime.datetime.now() + datetime.timedelta(seconds=total)
        said_checks = f", {checks} validations of ~{_span(per_check)}" if checks and per_check else ""
        rank_zero_info(
            f"Run length: about {_span(total)} more ({int(left)} steps at {step:.2f} s{said_checks}), until "
            f"~{ends:%H:%M}."
        )

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self._val_time is None:
            self._val_time = time.perf_counter() - self._val_start

    @staticmethod
    def _validations_left(trainer) -> int:
        """Epochs from this one to the last that validate (every ``check_val_every_n_epoch``)."""
        if not trainer.enable_validation or not _val_batches(trainer):
            return 0
        every = trainer.check_val_every_n_epoch or 1
        last = (
            trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else trainer.current_epoch + 1
        )
        return sum((e + 1) % every == 0 for e in range(trainer.current_epoch, last))


def _val_batches(trainer) -> int:
    counts = trainer.num_val_batches
    counts = counts if isinstance(counts, list) else [counts]
    return int(sum(c for c in counts if math.isfinite(c)))


def _span(seconds: float) -> str:
    """``<0.1 s``, ``0.4 s``, ``45 s``, ``3 min 20 s``, ``2 h 05 min``."""
    if seconds < 0.05:
        return "<0.1 s"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
