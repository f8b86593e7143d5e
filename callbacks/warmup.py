"""Linear learning-rate warmup: start small and raise the lr to its base value (from 0 over the first few
hundred or thousand iterations, e.g. when fine-tuning pretrained weights: see docs/notes.md)."""

from __future__ import annotations

import math

from callbacks.lr_schedule import LRSchedule


class LinearWarmup(LRSchedule):
    """warmup(t) = s + (1 − s)·min(1, t/N): from s × base lr (s = ``start_factor``, 0 by default) to the base.

    Composes with any decay: lr(t) = base_lr × warmup(t) × decay(t). A warmup that ends after the run's
    last step is an error naming the value. Goyal et al.'s gradual warmup (from η to kη over 5 epochs, for a
    global batch kn > 256 only) is ``start_factor = 1/k``; the Bag-of-Tricks warmup (from 0) is the default.

    Args:
        warmup: N, the warmup's length in ``unit``s (epochs or optimizer steps).
        start_factor: s, the first step's lr as a fraction of the base lr.
        **kwargs: ``unit``, ``interval``, ``start``, ``groups`` of :class:`~callbacks.lr_schedule.LRSchedule`
            (``start`` and ``groups`` warm up newly unfrozen groups mid-run).
    """

    def __init__(self, warmup: float, start_factor: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not (math.isfinite(warmup) and warmup > 0):
            raise ValueError(f"LinearWarmup: warmup={warmup!r} must be a positive number of {self.unit}s")
        if not 0 <= start_factor <= 1:
            raise ValueError(f"LinearWarmup: start_factor={start_factor!r} must be in [0, 1]")
        self.warmup, self.start_factor = float(warmup), float(start_factor)

    def factor(self, t: float) -> float:
        return self.start_factor + (1.0 - self.start_factor) * min(1.0, t / self.warmup)

    def breakpoints(self) -> list[tuple[float, str]]:
        return [(self.start + self.warmup, "end of warmup")]

    def check(self) -> None:
        end = self.start + self.warmup
        if end > self.total:
            raise ValueError(
                f"LinearWarmup: warmup={self.warmup:g} {self.unit}s (ending at {end:g}) is longer than the whole "
                f"run ({self.total:g} {self.unit}s, {self.total_steps} optimizer steps): shorten the warmup or "
                "raise trainer.max_epochs / max_steps"
            )
