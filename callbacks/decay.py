"""Learning-rate decay over the run (start with a large lr and reduce it over time: see docs/notes.md).

Each class is one multiplier decay(t) of lr(t) = base_lr × warmup(t) × decay(t): its formula, ``factor(t)``
and its own parameters. t counts ``unit``s from ``start`` (epochs by default, evaluated at fractional epochs
every step unless ``interval="epoch"``); ``unit``, ``interval``, ``start`` and ``groups`` are the options of
every schedule (:class:`~callbacks.lr_schedule.LRSchedule`), given by name.

A run resumed with a larger ``max_epochs``: the step, multi-step, exponential and 1/t decays are functions of t
alone and go on as they were; a cosine decay over the run (``T`` not given) is re-planned over the new length
(:func:`~callbacks.lr_schedule.replan`), where the old plan would leave the lr at 0 for every new step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lightning.pytorch.utilities import rank_zero_warn

from callbacks.lr_schedule import LRSchedule, positive


class StepDecay(LRSchedule):
    """decay(t) = γ^⌊t/K⌋: ×γ every K units (the lectures' ImageNet recipe: ×0.1 every 30 epochs from 0.1).

    Args:
        step_size: K.
        gamma: γ, the factor applied at each step (0.1).
    """

    def __init__(self, step_size: float, gamma: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.step_size = positive(self, "step_size", step_size)
        self.gamma = positive(self, "gamma", gamma)

    def factor(self, t: float) -> float:
        return self.gamma ** math.floor(t / self.step_size)

    def breakpoints(self) -> list[tuple[float, str]]:
        n = math.ceil((self.total - self.start) / self.step_size)
        return [(self.start + k * self.step_size, f"step decay ×{self.gamma:g}^{k}") for k in range(1, n)]


class MultiStepDecay(LRSchedule):
    """decay(t) = γ^|{m ∈ milestones : m ≤ t}|: ×γ at each milestone.

    "Train the first lr longer": ``milestones: [50, 60]`` with ``max_epochs: 70`` instead of decaying at 30,
    60 and 90.

    Args:
        milestones: increasing times of the decays.
        gamma: γ, the factor applied at each milestone.
    """

    def __init__(self, milestones: Sequence[float], gamma: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.milestones = [float(m) for m in milestones]
        if not self.milestones or any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(
                f"MultiStepDecay: milestones={list(milestones)!r} must be a non-empty increasing list"
            )
        if self.milestones[0] <= 0:
            raise ValueError(f"MultiStepDecay: milestones={list(milestones)!r} must be positive")
        self.gamma = positive(self, "gamma", gamma)

    def factor(self, t: float) -> float:
        return self.gamma ** sum(m <= t for m in self.milestones)

    def breakpoints(self) -> list[tuple[float, str]]:
        return [
            (self.start + m, f"multi-step decay ×{self.gamma:g}^{k}")
            for k, m in enumerate(self.milestones, 1)
        ]


class RateDecay(LRSchedule):
    """A decay set by one rate k ≥ 0 per ``unit`` (k = 0: constant); subclasses give decay(t) of k·t.

    Args:
        k: the rate.
    """

    def __init__(self, k: float, **kwargs):
        super().__init__(**kwargs)
        self.k = positive(self, "k", k, allow_zero=True)


class ExponentialDecay(RateDecay):
    """decay(t) = e^(−kt) (α = α0·e^(−kt))."""

    def factor(self, t: float) -> float:
        return math.exp(-self.k * t)


class InverseTimeDecay(RateDecay):
    """decay(t) = 1/(1 + kt) (1/t decay, α = α0/(1 + kt))."""

    def factor(self, t: float) -> float:
        return 1.0 / (1.0 + self.k * t)


class CosineDecay(LRSchedule):
    """decay(t) = f + (1 − f)·½(1 + cos(π·min(t, T)/T)): the lectures' ½α0(1 + cos(tπ/T)) with a floor f·α0.

    Args:
        T: length of the decay in ``unit``s; None: from ``start`` to the end of the run (from the trainer).
        floor: f, the final lr as a fraction of each group's base lr (0: decay to 0).
    """

    def __init__(self, T: float | None = None, floor: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.T = None if T is None else positive(self, "T", T)
        if not 0 <= floor <= 1:
            raise ValueError(f"CosineDecay: floor={floor!r} must be a fraction of the base lr in [0, 1]")
        self.floor = float(floor)

    @property
    def length(self) -> float:
        return self.T if self.T is not None else self.total - self.start

    def check(self) -> None:
        if self.T is None:
            self.needs_length()
        if self.length <= 0:
            raise ValueError(
                f"CosineDecay: start={self.start:g} {self.unit}s leaves no time to decay in a run of "
                f"{self.total:g} {self.unit}s; lower start or give T"
            )
        end = self.start + self.length
        if self.floor == 0 and end < self.total:
            rank_zero_warn(
                f"CosineDecay: T={self.length:g} ends at {end:g} {self.unit}s and floor is 0, so the lr is 0 for the "
                f"last {self.total - end:g} {self.unit}s of the run: set T to the run's length (or leave it out), or "
                "give a floor"
            )

    def factor(self, t: float) -> float:
        T = self.length
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * min(t, T) / T))

    def breakpoints(self) -> list[tuple[float, str]]:
        return [*super().breakpoints(), (self.start + self.length, "cosine decay ends")]
