"""SIGTERM and SIGINT stop a run at the next step boundary, save ``last.ckpt``, and end with a non-zero code.

Lightning already turns SIGTERM into a stop after the current step (``trainer.received_sigterm``, then
``SIGTERMException`` from the loops, on every DDP rank), and under SLURM with auto-requeue SIGUSR1 saves
``hpc_ckpt_N.ckpt`` and requeues the job: both are kept as they are. What it lacks, and this adds: a
checkpoint at the signal (Lightning's exception is a ``SystemExit`` with code 0 and nothing is saved), the
same clean stop for Ctrl+C (Lightning would stop mid-step with exit code 1), and the facts the ``zoo`` command
needs to print the resume command and exit 143 (SIGTERM) or 130 (SIGINT). A second Ctrl+C stops at once.
"""

from __future__ import annotations

import os
import signal
import threading

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoo import compat


class Interrupt(Callback):
    """Saves ``<checkpoint dir>/last.ckpt`` when a run is stopped by SIGTERM or SIGINT and tags the exception
    with ``zoo_signal`` (the signal number), ``zoo_checkpoint`` (the file, or None), ``zoo_epoch``, ``zoo_step``
    and ``zoo_rank``."""

    def __init__(self) -> None:
        self.signal: int | None = None  # SIGINT once Ctrl+C was pressed
        self._trainer = None
        self._previous = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer
        if threading.current_thread() is threading.main_thread() and self._previous is None:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        if self.signal is not None or self._trainer is None:
            raise KeyboardInterrupt  # the second Ctrl+C: stop now
        self.signal = signal.SIGINT
        compat.request_stop(self._trainer)
        rank_zero_info("\nCtrl+C: stopping after this step and saving last.ckpt (Ctrl+C again stops at once)")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        exception.zoo_signal = self.signal or signal.SIGTERM
        exception.zoo_epoch, exception.zoo_step = trainer.current_epoch, trainer.global_step
        exception.zoo_rank = trainer.global_rank  # only rank 0 says how to resume
        exception.zoo_checkpoint = None
        ckpt = trainer.checkpoint_callback
        if trainer.state.fn != "fit" or trainer.global_step == 0 or ckpt is None or not ckpt.dirpath:
            return  # nothing trained in this run yet: an earlier last.ckpt stays as it is
        path = os.path.join(ckpt.dirpath, ckpt.CHECKPOINT_NAME_LAST + ckpt.FILE_EXTENSION)
        # the whole state, to resume from; said, so that Lightning does not print that it chose it
        trainer.save_checkpoint(path, weights_only=False)
        exception.zoo_checkpoint = path
