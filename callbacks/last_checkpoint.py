"""``last.ckpt`` every N optimizer steps, so a long epoch (ImageNet: 5,000 steps at 256 images) can be resumed
from the middle. Lightning's own ``ModelCheckpoint`` does the work; this only fixes its settings."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Writes ``<dirpath>/last.ckpt`` whenever global_step mod N = 0 (N = ``every_n_train_steps``; 0: never).

    It keeps no best checkpoints (``save_top_k=0``); the zoo's main checkpoint, which monitors ``val/top1``,
    writes the same ``last.ckpt`` at the end of each epoch. The file holds the model, the optimizer, the lr
    schedules' state, the epoch and the step: ``zoo fit --ckpt_path last`` continues from it.

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

    def on_train_end(self, trainer, pl_module) -> None:
        """Nothing more at the end: the main checkpoint has written last.ckpt at the last epoch's end."""
