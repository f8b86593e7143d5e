"""The zoo's main checkpoint: Lightning's ``ModelCheckpoint``, except that a diverged epoch never becomes "best".

Lightning keeps the first epoch as best whatever its score (even NaN), and any later one that scores better,
so a run at lr 1000 keeps weights of 1e30 as its best checkpoint. Here an epoch is a candidate only when
its monitored value is finite and every weight is finite with |w| ≤ ``max_abs_weight``; a refused epoch is
said once. ``last.ckpt`` is written at the end of every epoch: Lightning 2.6 writes it only when a top-k
checkpoint was written at the same step, so after the best epoch it stopped moving and a resume from "last"
would train the epochs since then again. In an epoch that is a new best, ``last.ckpt`` is a hard link to the
best file (the same bytes: one write per epoch, not two); the next epoch's ``last.ckpt`` replaces the name.
Every full checkpoint of a diverged run carries the reason (``checkpoint["diverged"]``).
"""

from __future__ import annotations

import math
from weakref import proxy

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from zoo.checkpoint_io import atomic_link
from zoo.protocols import Guarded, SplitData


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
    """Why the module's non-finite guard (``zoo.guard``) stopped training, or None when it did not."""
    guard = pl_module.guard if isinstance(pl_module, Guarded) else None
    if guard is not None and guard.in_row >= guard.max_in_row:
        return f"{guard.in_row} non-finite losses in a row stopped training"
    return None


def cached_state_key(checkpoint: ModelCheckpoint) -> str:
    """``ModelCheckpoint.state_key``, built again only when a setting it names changed. Lightning reads the key
    at every hook it calls on the callback (~10 per training step), and builds it each time from the repr of a
    dict of five settings (~3 µs)."""
    settings = (
        checkpoint.monitor,
        checkpoint.mode,
        checkpoint._every_n_train_steps,
        checkpoint._every_n_epochs,
        checkpoint._train_time_interval,
    )
    if checkpoint.__dict__.get("_key_settings") != settings:
        checkpoint._key_settings, checkpoint._key = settings, ModelCheckpoint.state_key.fget(checkpoint)
    return checkpoint._key


def monitor_candidates(trainer) -> dict[str, torch.Tensor]:
    """``ModelCheckpoint._monitor_candidates``: the logged metrics with integer ``epoch`` and ``step``, copied by
    a ``clone`` of each tensor instead of Lightning's ``deepcopy`` of the dict (~0.3 ms at every epoch's end)."""
    out = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in trainer.callback_metrics.items()}
    for key, now in (("epoch", trainer.current_epoch), ("step", trainer.global_step)):
        value = out.get(key)
        out[key] = value.int() if torch.is_tensor(value) else torch.tensor(now)
    return out


class BestCheckpoint(ModelCheckpoint):
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
        return cached_state_key(self).replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

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

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._every_n_train_steps < 1 and self._train_time_interval is None:
            return  # no writes by step or time: what Lightning's hook decides after ~7 µs of checks
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer, pl_module) -> None:
        before = self.best_model_path
        super().on_validation_end(trainer, pl_module)
        self._note_best(trainer, before)
        if not self._should_save_on_train_epoch_end(trainer):
            self._last_every_epoch(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        before = self.best_model_path
        super().on_train_epoch_end(trainer, pl_module)
        self._note_best(trainer, before)
        if self._should_save_on_train_epoch_end(trainer):
            self._last_every_epoch(trainer)

    def _monitor_candidates(self, trainer) -> dict[str, torch.Tensor]:
        return monitor_candidates(trainer)

    def _note_best(self, trainer, before: str) -> None:
        """Keep the validation metrics of a new best epoch: the results table quotes them without validating
        the best checkpoint once more."""
        if self.best_model_path and self.best_model_path != before:
            metrics = trainer.callback_metrics.items()
            self.best_metrics = {k: float(v) for k, v in metrics if k.startswith("val/") and v.numel() == 1}

    def _last_every_epoch(self, trainer) -> None:
        """``last.ckpt`` of this step, unless this callback wrote a checkpoint at this step already (a new best
        and its last.ckpt: Lightning's skip rule compares the step of the last write)."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        """Lightning's save, except that ``last.ckpt`` of the step a best checkpoint was just written at is a
        hard link to that file (:func:`zoo.checkpoint_io.atomic_link`): the same bytes, one write less."""
        source = self._last_checkpoint_saved
        if (
            filepath == self.last_model_path
            and source
            and source != filepath
            and self._last_global_step_saved == trainer.global_step
        ):
            linked = atomic_link(source, filepath) if trainer.is_global_zero else False
            if trainer.strategy.broadcast(linked):  # every rank saves (a collective) or none does
                self._last_checkpoint_saved = filepath
                if trainer.is_global_zero:
                    for logger in trainer.loggers:
                        logger.after_save_checkpoint(proxy(self))
                return
        super()._save_checkpoint(trainer, filepath)

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
