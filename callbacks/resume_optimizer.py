"""A resumed run trains with the optimizer settings its command line gives: ``zoo fit --ckpt_path CKPT
--model.optimizer.lr 0.05`` goes on at lr 0.05 (times the schedule's factor), not at the checkpoint's lr.

Lightning builds the optimizer from the model's settings, then loads the checkpoint's optimizer state over it,
param groups included: the lr, weight decay and momentum the stopped run had. Here, after that restore, every
setting that differs from the checkpoint's (the CLI gives the command line's ``--model.*`` precedence over the
checkpoint's hyper-parameters) is applied to the restored groups: the lr as a ratio (each group keeps its
multiple of the head's lr, e.g. the backbone's 0.1×), the others as values. Each change is said in one line.
"""

from __future__ import annotations

import math
import warnings

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from zoo.protocols import Optimized
from zoo.training.optim import OptimizerConfig


class ResumeOptimizer(Callback):
    """Applies the module's optimizer settings (``pl_module.optimizer_config``) to the param groups restored
    from a checkpoint, where they differ from the checkpoint's hyper-parameters. Put it before the lr schedules
    in ``trainer.callbacks``: they write each group's lr from its ``base_lr``, which this rescales."""

    def __init__(self) -> None:
        self.saved: dict | None = None  # the checkpoint's optimizer settings, until training starts

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.saved = (checkpoint.get("hyper_parameters") or {}).get("optimizer")

    def on_train_start(self, trainer, pl_module) -> None:
        saved, self.saved = self.saved, None
        config = pl_module.optimizer_config if isinstance(pl_module, Optimized) else None
        if not isinstance(saved, dict) or not isinstance(config, OptimizerConfig) or not trainer.optimizers:
            return
        with warnings.catch_warnings():  # its unused options were said when the checkpoint's run started
            warnings.simplefilter("ignore")
            old = OptimizerConfig.from_dict(saved).resolved()
        new = config.resolved()
        changes = []
        for key in sorted(set(old) | set(new)):
            if old.get(key) == new.get(key):
                continue
            changed = apply(trainer.optimizers, key, old.get(key), new.get(key))
            if changed:
                changes.append(changed)
            else:
                rank_zero_warn(
                    f"--model.optimizer.{key} {new.get(key)!r} is ignored on a resume: the optimizer state of the "
                    f"checkpoint keeps {old.get(key)!r}"
                )
        if changes:
            rank_zero_info(f"Resumed with the command line's optimizer settings: {'; '.join(changes)}")


def apply(optimizers, key: str, old, new) -> str | None:
    """Set optimizer setting ``key`` from ``old`` to ``new`` in every restored group; what was done, or None when
    it cannot be (a weight decay from 0: the restored groups do not say which parameters to decay)."""
    groups = [g for optimizer in optimizers for g in optimizer.param_groups if key in g]
    if key == "lr":
        if not (old and math.isfinite(old) and new and math.isfinite(new)):
            return None
        for group in groups:
            for name in ("lr", "base_lr", "initial_lr"):
                if name in group:
                    group[name] *= new / old
        return f"lr {old:g} → {new:g} (every param group ×{new / old:.3g})"
    if key == "weight_decay":
        decayed = [g for g in groups if g[key] and g[key] == old]
        if not decayed:
            return None
        for group in decayed:
            group[key] = new
        return f"weight_decay {old:g} → {new:g}"
    if not groups:
        return None
    for group in groups:
        group[key] = tuple(new) if isinstance(group[key], tuple) and new is not None else new
    return f"{key} {old!r} → {new!r}"
