"""Whether a run failed in its set-up or while it ran: an error before the first batch comes from the user's
values, data or checkpoint (the ``zoo`` command says so in one line), one after it is a bug (a traceback)."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from zoo.runtime.checkpoint import to_plain
from zoo.runtime.loggers import remove_unused_run_dir


class RunPhase(Callback):
    """Marks, on any exception Lightning sees, whether a batch had started (``zoo_during_run``): errors before
    the first batch come from the set-up (the user's values, data or checkpoint), errors after it are bugs.
    Also keeps checkpoints to tensors and plain types (paths become strings), so they load weights-only."""

    def __init__(self) -> None:
        self.started = False
        self.train_batches = 0  # training batches run by this process (not counting a resumed run's)
        self.epochs_ended = 0  # a resumed run may only end (and validate) the epoch its checkpoint was in

    def _start(self, *args) -> None:
        self.started = True

    on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _start

    def on_train_batch_start(self, *args) -> None:
        self.started = True
        self.train_batches += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs_ended += 1

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        self.started = False  # the training loader is built after the sanity check: still set-up

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        exception.zoo_during_run = self.started
        if trainer.is_global_zero and self.train_batches == 0 and self.epochs_ended == 0:
            remove_unused_run_dir(trainer)  # failed at its start: no empty runs/<recipe>/version_N is left

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        to_plain(checkpoint)
