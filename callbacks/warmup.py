"""Learning-rate warmup: start small, then train at the base lr. Linear: raise the lr from 0 to its base value
over the first few hundred or thousand iterations (e.g. when fine-tuning pretrained weights: see docs/notes.md).
Constant: a small lr for the first iterations, then the base lr at once (He et al. 2016's ResNet-110)."""

from __future__ import annotations

import math

from callbacks.lr_schedule import LRSchedule


class Warmup(LRSchedule):
    """A warmup of N ``unit``s from ``start_factor`` × base lr; subclasses give warmup(t) between the two.

    Composes with any decay: lr(t) = base_lr × warmup(t) × decay(t). A warmup that ends after the run's
    last step is an error naming the value.

    Args:
        warmup: N, the warmup's length in ``unit``s (epochs or optimizer steps).
        start_factor: s, the first step's lr as a fraction of the base lr.
        **kwargs: ``unit``, ``interval``, ``start``, ``groups`` of :class:`~callbacks.lr_schedule.LRSchedule`
            (``start`` and ``groups`` warm up newly unfrozen groups mid-run).
    """

    def __init__(self, warmup: float, start_factor: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        if not (math.isfinite(warmup) and warmup > 0):
            raise ValueError(f"{name}: warmup={warmup!r} must be a positive number of {self.unit}s")
        if not 0 <= start_factor <= 1:
            raise ValueError(f"{name}: start_factor={start_factor!r} must be in [0, 1]")
        self.warmup, self.start_factor = float(warmup), float(start_factor)

    def breakpoints(self) -> list[tuple[float, str]]:
        return [(self.start + self.warmup, "end of warmup")]

    def check(self) -> None:
        end = self.start + self.warmup
        if end > self.total:
            raise ValueError(
                f"{type(self).__name__}: warmup={self.warmup:g} {self.unit}s (ending at {end:g}) is longer than "
                f"the whole run ({self.total:g} {self.unit}s, {self.total_steps} optimizer steps): shorten the "
                "warmup or raise trainer.max_epochs / max_steps"
            )


class LinearWarmup(Warmup):
    """warmup(t) = s + (1 − s)·min(1, t/N): from s × base lr (s = ``start_factor``, 0 by default) to the base.

    Goyal et al.'s gradual warmup (from η to kη over 5 epochs, for a global batch kn > 256 only) is
    ``start_factor = 1/k``; the Bag-of-Tricks warmup (from 0) is the default. Arguments: :class:`Warmup`'s.
    """

    def factor(self, t: float) -> float:
        return self.start_factor + (1.0 - self.start_factor) * min(1.0, t / self.warmup)


class ConstantWarmup(Warmup):
    """warmup(t) = s for t < N, 1 from N on: s × base lr (s = ``start_factor``) for N ``unit``s, then the base.

    He et al. 2016 (section 4.2) warm ResNet-110 on CIFAR-10 up at lr 0.01 "until the training error is below
    80% (about 400 iterations)", then go back to 0.1: ``ConstantWarmup(warmup=400, start_factor=0.1,
    unit="step")`` beside a base lr of 0.1 (recipe ``cifar10-resnet110``). Arguments: :class:`Warmup`'s;
    ``start_factor`` defaults to that 0.1.
    """

    def __init__(self, warmup: float, start_factor: float = 0.1, **kwargs):
        super().__init__(warmup, start_factor, **kwargs)

    def factor(self, t: float) -> float:
        return self.start_factor if t < self.warmup else 1.0
