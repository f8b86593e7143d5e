"""Skip training steps whose loss is NaN or inf, so that no non-finite value reaches the weights, the
normalisation statistics or a checkpoint; stop the run after too many in a row (the lr is too high)."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.nn.modules.batchnorm import _NormBase


class NonFiniteGuard:
    """Wrap a training step: ``saved = guard.save(model)`` before the forward pass, then
    ``guard.ok(module, loss, saved)``; on False the step must return None (Lightning then skips it).
    A step is bad when its loss or the running statistics it updated are not finite."""

    def __init__(self, max_in_row: int = 10):
        self.max_in_row = max_in_row
        self.skipped = 0
        self.in_row = 0

    @staticmethod
    def save(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of the running statistics the forward pass is about to update."""
        saved = []
        for m in model.modules():
            if isinstance(m, _NormBase) and m.track_running_stats and m.training:
                for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                    if buf is not None:
                        saved.append((buf, buf.clone()))
        return saved

    def ok(self, module, loss: torch.Tensor, saved) -> bool:
        # the loss can still be finite while the running variance overflowed: check both, with one sync
        checks = [torch.isfinite(loss.detach()).all()]
        checks += [torch.isfinite(buf).all() for buf, _ in saved if buf.is_floating_point()]
        finite = bool(torch.stack(checks).all())
        trainer = module.trainer
        if trainer.world_size > 1:  # every rank must skip the same step, or DDP hangs
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            self.in_row = 0
            return True
        for buf, copy in saved:
            buf.copy_(copy)
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
