"""Faults injected into real ``zoo fit`` runs by the resume tests: the process kills itself with SIGKILL (no
handler runs, nothing is flushed) or sends itself another signal at a chosen optimizer step, dies in the
middle of writing a checkpoint, or gets Ctrl+C twice.

Used as ``--trainer.callbacks+=faults.KillAt --trainer.callbacks.step K`` with ``tests/`` on PYTHONPATH."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


def _die(sig: str = "SIGKILL") -> None:
    os.kill(os.getpid(), getattr(signal, sig))


class KillAt(Callback):
    """``signal`` (SIGKILL by default) before optimizer step ``step`` (``where=batch``) or in the validation that
    follows it (``where=validation``)."""

    def __init__(self, step: int, where: str = "batch", signal: str = "SIGKILL"):
        self.step, self.where, self.signal = step, where, signal
        self.sent = False

    def _maybe(self, trainer, where: str) -> None:
        if self.where == where and trainer.global_step == self.step and not self.sent:
            self.sent = True
            _die(self.signal)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._maybe(trainer, "batch")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._maybe(trainer, "validation")


class _DieWhenPickled:
    """A checkpoint entry whose serialisation kills the process: the save is cut off part-way through."""

    def __reduce__(self):
        _die()


class KillDuringSave(Callback):
    """SIGKILL while the checkpoint written at optimizer step ``step`` is being serialised to disk."""

    def __init__(self, step: int):
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.global_step == self.step:
            checkpoint["zzz_fault"] = _DieWhenPickled()  # after the weights: a part of the file is written


class CtrlC(Callback):
    """Ctrl+C (SIGINT to this process) before optimizer step ``step``, then Ctrl+C again: ``second="save"`` while
    the checkpoint of the stop is being written (the moment a second press did most harm), ``"at_once"`` later
    in the same step, after ``Interrupt``'s grace (set to 0 here), which stops the run at once."""

    def __init__(self, step: int, second: str = "save"):
        self.step, self.second = step, second
        self.first_sent = self.second_sent = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.first_sent:
            self.first_sent = True
            if self.second == "at_once":
                for callback in trainer.callbacks:
                    if hasattr(callback, "grace"):
                        callback.grace = 0.0
            _die("SIGINT")

    def _again(self) -> None:
        if self.first_sent and not self.second_sent:
            self.second_sent = True
            _die("SIGINT")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.second == "at_once":
            self._again()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.second == "save":
            self._again()


class CtrlCAtTheEnd(Callback):
    """Ctrl+C once training has ended, while the end-of-training reports are written (no loop checks it now)."""

    def on_train_end(self, trainer, pl_module) -> None:
        _die("SIGINT")
