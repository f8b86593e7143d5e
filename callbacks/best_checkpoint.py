"""The zoo's main checkpoint: Lightning's ``ModelCheckpoint``, except that a diverged epoch never becomes "best".

Lightning keeps the first epoch as best whatever its score (even NaN), and any later one that scores better,
so a run at lr 1000 keeps weights of 1e30 as its best checkpoint. Here an epoch is a candidate only when
its monitored value is finite and every weight is finite with |w| ≤ ``max_abs_weight``; a refused epoch is
said once. ``last.ckpt`` is written at the end of every epoch: Lightning 2.6 writes it only when a top-k
checkpoint was written at the same step, so after the best epoch it stopped moving and a resume from "last"
would train the epochs since then again. Every full checkpoint of a diverged run carries the reason
(``checkpoint["diverged"]``).
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from zoo.compat import CheckpointSaves
from zoo.protocols import Guarded, SplitData
from zoo.runtime.checkpoint_io import atomic_link


def unusable_weights(module: torch.nn.Module, max_abs_weight: float) -> str | None:
    """Why the weights of ``module`` cannot be a best checkpoint (non-finite, or max |w| > ``max_abs_weight``)."""
    peaks = [p.detach().abs().max() for p in module.parameters() if p.numel() and p.is_floating_point()]
    if not peaks:
        return None
    peak = float(torch.stack([p.float() for p in peaks]).max())  # one sync for the whole model
    if not math.isfinite(peak):
        return "its weights hold NaN or inf"
    if peak > max_abs_weight:
        return f"its largest weight is {peak:.3g} (> max_abs_weight {max_abs_weight:g}): the run diverged"
    return None


def diverged(pl_module, max_abs_weight: float) -> str | None:
    """Why the run of ``pl_module`` counts as diverged now (its non-finite guard stopped training, or its weights
    are unusable), or None."""
    return guard_stopped(pl_module) or unusable_weights(pl_module, max_abs_weight)


def guard_stopped(pl_module) -> str | None:
    """Why the module's non-finite guard (``zoo.training.guard``) stopped training, or None when it did not."""
    guard = pl_module.guard if isinstance(pl_module, Guarded) else None
    if guard is not None and guard.in_row >= guard.max_in_row:
        return f"{guard.in_row} non-finite losses in a row stopped training"
    return None


class BestCheckpoint(CheckpointSaves, ModelCheckpoint):
    """``ModelCheckpoint`` whose top-k only takes epochs with a finite score and finite, bounded weights.

    Args:
        max_abs_weight: an epoch whose largest |weight| exceeds this is diverged, never best.
        **kwargs: the arguments of Lightning's ``ModelCheckpoint``.
    """

    def __init__(self, *args, max_abs_weight: float = 1e6, **kwargs):
        super().__init__(*args, **kwargs)
        if not max_abs_weight > 0:
            raise ValueError(f"checkpoint.max_abs_weight={max_abs_weight!r} must be > 0")
        self.max_abs_weight = max_abs_weight
        self.refused: list[tuple[int, str]] = []  # (epoch, why) of the epochs not kept as best
        # the validation metrics of the epoch that became best in this process ({} after a resume, until one does)
        self.best_metrics: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        """Lightning's own key, so runs saved before this class existed still restore their best paths."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Data with no validation split (too few images to hold one out, or ``val_fraction 0``): there is no
        score to pick a best by, so no validation loop runs and the last epoch's weights are the checkpoint
        (the one tested after fit)."""
        super().setup(trainer, pl_module, stage)
        dm = trainer.datamodule
        if stage != "fit" or self.monitor is None or not isinstance(dm, SplitData) or dm.has_split("val"):
            return
        rank_zero_info(
            f"No validation split, so no {self.monitor} to choose a checkpoint by: the last epoch's weights are kept."
        )
        self.monitor = None
        if "val" in str(self.filename):
            self.filename = "epoch{epoch:03d}"
        trainer.limit_val_batches = 0

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """A checkpoint of a diverged run says so (``checkpoint["diverged"]``: why), whoever writes it (last.ckpt
        at an epoch's end or at a signal): ``zoo fit --ckpt_path`` and ``zoo predict`` refuse it."""
        why = diverged(pl_module, self.max_abs_weight)
        if why:
            checkpoint["diverged"] = why

    def on_validation_end(self, trainer, pl_module) -> None:
        """Lightning's save, then ``last.ckpt`` of this epoch (unless a new best wrote it at this step already)."""
        before = self.best_model_path
        super().on_validation_end(trainer, pl_module)
        self._note_best(trainer, before)
        if not self.saves_at_train_epoch_end(trainer):
            self.save_last_now(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        before = self.best_model_path
        super().on_train_epoch_end(trainer, pl_module)
        self._note_best(trainer, before)
        if self.saves_at_train_epoch_end(trainer):
            self.save_last_now(trainer)

    def _note_best(self, trainer, before: str) -> None:
        """Keep the validation metrics of a new best epoch: the results table quotes them without validating
        the best checkpoint once more."""
        if self.best_model_path and self.best_model_path != before:
            metrics = trainer.callback_metrics.items()
            self.best_metrics = {k: float(v) for k, v in metrics if k.startswith("val/") and v.numel() == 1}

    def add_candidate(self, trainer, filepath: str, metrics: dict[str, float | None]) -> None:
        """Count ``filepath``, a checkpoint written outside the loops (the linear probe's, before the first epoch),
        as the best so far, scored by ``metrics[monitor]``: a later epoch replaces it only by scoring better. The
        bookkeeping is ``ModelCheckpoint``'s public state (``best_k_models``, ``best_model_path``, ...); without
        a monitor it is the latest checkpoint, kept until an epoch writes one."""
        value = metrics.get(self.monitor) if self.monitor else None
        score = None if value is None else torch.tensor(float(value))
        if score is not None and self.save_top_k != 0:
            self.best_k_models = {filepath: score}
            self.kth_best_model_path, self.kth_value = filepath, score
            self.best_model_score = score
        self.best_model_path = filepath
        self.best_metrics = {k: float(v) for k, v in metrics.items() if v is not None}
        if self.save_last:  # `--ckpt_path last` finds it too
            last = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            linked = atomic_link(filepath, last) if trainer.is_global_zero else False
            if not trainer.strategy.broadcast(linked):
                trainer.save_checkpoint(last, weights_only=False)
            self.last_model_path = last

    def check_monitor_top_k(self, trainer, current: torch.Tensor | None = None) -> bool:
        if current is None:
            return False
        why = None
        if not torch.isfinite(torch.as_tensor(current)).all():
            why = f"{self.monitor} is {float(current)}"
        elif trainer.lightning_module is not None:
            why = unusable_weights(trainer.lightning_module, self.max_abs_weight)
        if why:
            self.refused.append((trainer.current_epoch, why))
            rank_zero_warn(f"epoch {trainer.current_epoch} is not kept as a best checkpoint: {why}")
            return False
        return super().check_monitor_top_k(trainer, current)
