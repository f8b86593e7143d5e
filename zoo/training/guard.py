"""Skip training steps whose loss is NaN or inf, so that no non-finite value reaches the weights, the
normalisation statistics or a checkpoint; stop the run after too many in a row (the lr is too high)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from zoo.compat import norm_base


class NonFiniteGuard:
    """Wrap a training step: ``saved = guard.save(model)`` before the forward pass, then
    ``guard.ok(module, loss, saved)``; on False the step must return None (Lightning then skips it).
    A step is bad when its loss or the running statistics it updated are not finite."""

    def __init__(self, max_in_row: int = 10):
        self.max_in_row = max_in_row
        self.skipped = 0
        self.in_row = 0

    def save(self, model: nn.Module) -> Saved | None:
        """Copies of the running statistics the forward pass is about to update: two copies in all (the means and
        variances of every layer in one tensor, the batch counts in another), not one per buffer (~150 kernel
        launches a step for ResNet-50)."""
        norms = [m for m in self._norms(model) if m.training]
        if not norms:
            return None
        stats = [b for m in norms for b in (m.running_mean, m.running_var)]
        counts = [m.num_batches_tracked for m in norms if m.num_batches_tracked is not None]
        if len({b.device for b in stats}) > 1:  # a model split over devices: one copy per buffer
            return Saved(stats, counts, [b.clone() for b in stats + counts], flat=False)
        flat = [torch.cat([b.reshape(-1) for b in stats])] + ([torch.stack(counts)] if counts else [])
        return Saved(stats, counts, flat, flat=True)

    def _norms(self, model: nn.Module) -> list[nn.Module]:
        """The norm layers of ``model`` that keep running statistics (looked up once per model)."""
        if getattr(self, "_model", None) is not model:
            self._model = model
            self._found = [m for m in model.modules() if isinstance(m, norm_base()) and m.track_running_stats]
        return self._found

    def ok(self, module, loss: torch.Tensor, saved) -> bool:
        # the loss can still be finite while the running variance overflowed: check both, with one sync
        values = [loss.detach().reshape(-1)] + ([b.reshape(-1) for b in saved.stats] if saved else [])
        if len({v.device for v in values}) > 1:
            values = [v.to(values[0].device) for v in values]
        finite = bool(torch.isfinite(torch.cat(values)).all())
        trainer = module.trainer
        if trainer.world_size > 1:  # every rank must skip the same step, or DDP hangs
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self.in_row = 0
            return True
        if saved:
            saved.restore()
        self.skipped += 1
        self.in_row += 1
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        rank_zero_warn(
            f"non-finite loss at epoch {module.current_epoch} step {module.global_step} (lr {lr:.3g}): "
            f"step skipped ({self.skipped} so far)"
        )
        if self.in_row >= self.max_in_row:
            rank_zero_warn(
                f"{self.in_row} non-finite losses in a row: training stopped. The learning rate is most likely "
                "too high; the weights, statistics and checkpoints hold no NaN."
            )
            trainer.should_stop = True
        return False


@dataclass
class Saved:
    """The running statistics of the norm layers in training mode (``stats``: means and variances, ``counts``:
    batches seen) and their values before the forward pass (``copies``: flattened into one tensor per kind when
    ``flat``, else one per buffer)."""

    stats: list[torch.Tensor]
    counts: list[torch.Tensor]
    copies: list[torch.Tensor]
    flat: bool

    def restore(self) -> None:
        """Put the values from before the forward pass back."""
        if not self.flat:
            for buf, copy in zip(self.stats + self.counts, self.copies):
                buf.copy_(copy)
            return
        for buf, part in zip(self.stats, self.copies[0].split([b.numel() for b in self.stats])):
            buf.copy_(part.view_as(buf))
        for buf, count in zip(self.counts, self.copies[1] if self.counts else []):
            buf.copy_(count)
