"""SIGTERM and SIGINT stop a run at the next step boundary, save ``last.ckpt``, and end with a non-zero code.

Lightning already turns SIGTERM into a stop after the current step (``trainer.received_sigterm``, then
``SIGTERMException`` from the loops, on every DDP rank), and under SLURM with auto-requeue SIGUSR1 saves
``hpc_ckpt_N.ckpt`` and requeues the job: both are kept as they are. What it lacks, and this adds: a
checkpoint at the signal (Lightning's exception is a ``SystemExit`` with code 0 and nothing is saved), the
same clean stop for Ctrl+C (Lightning would stop mid-step with exit code 1), and the facts the ``zoo`` command
needs to print the resume command and exit 143 (SIGTERM) or 130 (SIGINT).

Ctrl+C pressed again within ``grace`` seconds of the first, or once the stop is under way (the checkpoint is
being saved), is the same request: it changes nothing, so two presses in quick succession always end with the
checkpoint saved. Pressed later, while the step still runs (a long compile, a stalled loader), it stops at once:
nothing is saved at the signal, the last checkpoint written before stays as it was, and the exit code is 130.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoo import compat

GRACE = 5.0  # seconds after the first Ctrl+C in which another one is the same request


class Interrupt(Callback):
    """Saves ``<checkpoint dir>/last.ckpt`` when a run is stopped by SIGTERM or SIGINT and tags the exception
    with ``zoo_signal`` (the signal number), ``zoo_checkpoint`` (the file saved, or None), ``zoo_kept`` (the
    last checkpoint left as it was by a stop at once, or None), ``zoo_epoch``, ``zoo_step`` and ``zoo_rank``.

    Args:
        grace: seconds after the first Ctrl+C during which another Ctrl+C is ignored.
    """

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self.signal: int | None = None  # SIGINT once Ctrl+C was pressed
        self.first: float | None = None  # when (time.monotonic)
        self.stopping = False  # the loops have stopped: the checkpoint is being saved
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
        trainer = self._trainer
        if trainer is None:
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal, self.first = signal.SIGINT, time.monotonic()
            compat.request_stop(trainer)
            rank_zero_info(
                "\nCtrl+C: stopping after this step and saving last.ckpt "
                f"(Ctrl+C again after {self.grace:g} s stops at once, without saving)"
            )
            return
        if self.stopping or trainer.state.status == TrainerStatus.INTERRUPTED:
            return  # the loops have stopped: the save must finish
        if time.monotonic() - self.first < self.grace:
            return  # the same request, pressed twice
        raise KeyboardInterrupt  # the step still runs long after the first Ctrl+C: stop at once

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):  # stopped at once: nothing is saved now
            self._tag(trainer, exception, signal.SIGINT)
            exception.zoo_kept = self._existing_last(trainer)
            return
        if not isinstance(exception, SIGTERMException):
            return
        self.stopping = True
        self._tag(trainer, exception, self.signal or signal.SIGTERM)
        path = self._last_path(trainer)
        if trainer.state.fn != "fit" or trainer.global_step == 0 or path is None:
            exception.zoo_kept = self._existing_last(
                trainer
            )  # nothing trained yet, or not a fit: kept as it was
            return
        # the whole state, to resume from; said, so that Lightning does not print that it chose it
        trainer.save_checkpoint(path, weights_only=False)
        exception.zoo_checkpoint = path

    def after_training(self, trainer) -> KeyboardInterrupt | None:
        """Ctrl+C pressed after the loops' last check (the end-of-training reports): the stop to raise once the
        fit's results are printed, instead of going on with the test after fit; None when there was none."""
        if self.signal is None or self.stopping:
            return None
        stop = KeyboardInterrupt()
        self._tag(trainer, stop, self.signal)
        stop.zoo_checkpoint = self._existing_last(trainer)  # written at the end of the last epoch
        return stop

    @staticmethod
    def _tag(trainer, exception: BaseException, signum: int) -> None:
        exception.zoo_signal = signum
        exception.zoo_epoch, exception.zoo_step = trainer.current_epoch, trainer.global_step
        exception.zoo_rank = trainer.global_rank  # only rank 0 says how to resume
        exception.zoo_checkpoint = None

    @staticmethod
    def _last_path(trainer) -> str | None:
        ckpt = trainer.checkpoint_callback
        if ckpt is None or not ckpt.dirpath:
            return None
        return os.path.join(ckpt.dirpath, ckpt.CHECKPOINT_NAME_LAST + ckpt.FILE_EXTENSION)

    def _existing_last(self, trainer) -> str | None:
        path = self._last_path(trainer)
        return path if path and os.path.isfile(path) else None
