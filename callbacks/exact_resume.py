"""Exact resume: what a checkpoint needs, beyond what Lightning saves, for a resumed run to go on bit for bit.

Lightning saves the weights, the optimizer, the loops' progress, every callback's ``state_dict`` and the training
loader's ``state_dict`` (the zoo's loaders: :mod:`zoo.data.loader`). Two things are missing, and added here:

- the global generators of the process (torch, CUDA, NumPy, Python), which draw the dropout masks, DropPath,
  mixup and anything else the model samples; they are put back at ``on_train_start``, the last hook before the
  first batch (Lightning builds the loaders and may run a sanity check between loading and training);
- a checkpoint written after an epoch's last batch but before the epoch's end (e.g. after its validation) would
  restore a loader at the end of its epoch, and the next epoch would be empty; its saved position is moved to
  the next epoch's start. (From one written at the epoch's end, Lightning restores no loader state at all.)
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from zoo.data.loader import next_epoch
from zoo.runtime.rng import rng_states, set_rng_states


class ExactResume(Callback):
    """Saves the generators' states s_k after step k and restores them before step k + 1 of the resumed run."""

    def __init__(self):
        self._restore: dict | None = None

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restore = state_dict.get("rng")

    def on_train_start(self, trainer, pl_module) -> None:
        if self._restore is not None:
            set_rng_states(self._restore)
            self._restore = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        if "combined_loader" in loop and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            loop["combined_loader"] = next_epoch(loop["combined_loader"])
