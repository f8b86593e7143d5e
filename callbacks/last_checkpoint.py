"""``last.ckpt`` every N optimizer steps, so a long epoch (ImageNet: 5,000 steps at 256 images) can be resumed
from the middle. Lightning's own ``ModelCheckpoint`` does the work; this fixes its settings, and moves a write
that falls on an epoch's last batch to the end of that epoch."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint

from zoo.compat import CheckpointSaves


class LastCheckpoint(CheckpointSaves, ModelCheckpoint):
    """Writes ``<dirpath>/last.ckpt`` whenever global_step mod N = 0 (N = ``every_n_train_steps``; 0: never).

    It keeps no best checkpoints (``save_top_k=0``); the zoo's main checkpoint, which monitors ``val/top1``,
    writes the same ``last.ckpt`` at the end of each epoch. The file holds everything a run needs to go on
    exactly where it stopped (``zoo fit --ckpt_path last``): the model, the optimizer, the schedules' and the
    other callbacks' state, epoch and step, the loader's position in the epoch and the generators' states.

    A step k that ends an epoch is written at the end of the epoch instead (``on_train_epoch_end``, after the
    epoch's validation): Lightning resumes a checkpoint of the last batch in the next epoch and never runs the
    validation it skipped, whose effects (precise-BN statistics, the best checkpoint) the run would then lack.

    Args:
        every_n_train_steps: N, optimizer steps between two writes (0: off).
        dirpath: folder of ``last.ckpt``; None: the run's ``checkpoints/`` folder (the main checkpoint's).
    """

    def __init__(self, every_n_train_steps: int = 1000, dirpath: str | None = None):
        if every_n_train_steps < 0:
            raise ValueError(
                f"last_checkpoint.every_n_train_steps={every_n_train_steps!r} must be ≥ 0 (0: off)"
            )
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,  # overwrite the main checkpoint's last.ckpt, not write last-v1.ckpt
        )
        self.every_n_train_steps = every_n_train_steps
        self._at_epoch_end = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.every_n_train_steps
        if n < 1 or trainer.global_step % n:
            return  # not a step to write at: what Lightning's hook decides after ~7 µs of checks
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._at_epoch_end = True  # written in on_train_epoch_end, after this epoch's validation
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._at_epoch_end:
            self.save_last_now(trainer)
        self._at_epoch_end = False

    def on_train_end(self, trainer, pl_module) -> None:
        """Nothing more at the end: the main checkpoint has written last.ckpt at the last epoch's end."""
