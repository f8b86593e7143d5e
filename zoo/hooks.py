"""Callback hooks left empty are not called: Lightning's dispatch costs ~2 µs per callback and hook."""

from __future__ import annotations

from collections.abc import Iterable

from lightning.pytorch.callbacks import Callback

# the hooks Lightning calls at every batch (training step: the first six)
BATCH_HOOKS = (
    "on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
    "on_before_zero_grad", "on_train_batch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
)  # fmt: skip


def skip_empty_hooks(callbacks: Iterable[Callback]) -> int:
    """For every per-batch hook a callback leaves as ``Callback``'s empty method, an instance attribute ``None``;
    returns how many hooks that takes out of each training step.

    Lightning calls every hook of a step on every callback (``lightning.pytorch.trainer.call``: the profiler's
    action name and context, then the call), ~2 µs each, whether the method does anything or not; it passes
    over an attribute that is not callable. With the recipes' 17 callbacks, ~80 of the ~100 calls a training
    step makes are to empty methods. The run does the same with or without them.
    """
    skipped = 0
    for callback in callbacks:
        for name in BATCH_HOOKS:
            if getattr(type(callback), name, None) is getattr(Callback, name):
                setattr(callback, name, None)
                skipped += name in BATCH_HOOKS[:6]
    return skipped
