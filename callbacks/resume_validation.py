"""A run stopped after an epoch's last training batch, before that epoch's validation was done (SIGTERM during
the validation, or at the last step), validates the epoch when it resumes.

Lightning resumes such a checkpoint at the epoch's end and skips its validation: the epoch would have no
validation score (no best-checkpoint candidate, a gap in the curves), and a run stopped in its final epoch would
end without one. This callback notices an epoch of the resumed run that ended with neither an optimizer step nor
a validation, and runs the validation there, before the checkpoint callbacks read it (so it must come before them
in ``trainer.callbacks``; the ``zoo`` command puts it there).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from zoo import compat


class ResumeValidation(Callback):
    """Validates, at the end of a resumed epoch that had nothing left to train, the validation it missed."""

    def __init__(self) -> None:
        # no per-batch hook: the optimizer steps tell whether the epoch trained
        self._step_at_start: int | None = None
        self._validated = False

    def on_train_start(self, trainer, pl_module) -> None:  # (a resumed epoch has no on_train_epoch_start)
        self._step_at_start, self._validated = trainer.global_step, False

    on_train_epoch_start = on_train_start

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trained = self._step_at_start is None or trainer.global_step != self._step_at_start
        if trained or self._validated or trainer.ckpt_path is None:
            return
        if compat.validate_in_fit(trainer):  # (if this epoch is one Lightning validates)
            rank_zero_info(
                f"validated epoch {trainer.current_epoch}: the run was stopped before its validation"
            )
