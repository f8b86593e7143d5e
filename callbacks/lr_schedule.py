"""The base of the zoo's learning-rate schedules, and the one place that writes each group's lr.

lr(t) = base_lr_of_group × Π_i factor_i(t) over every ``LRSchedule`` in ``trainer.callbacks``, so a warmup
and a decay compose by multiplication, and each group keeps its ratio to the others. A schedule is its
formula: a subclass gives ``factor(t)`` and its own parameters; the options every schedule shares (``unit``,
``interval``, ``start``, ``groups``), the run's length, the checkpoint state and the Lightning hooks are here.

The contract between the schedules in ``trainer.callbacks`` (none of them writes the lr on its own):

1. each ``LRSchedule`` is one factor of the product; their order does not change it;
2. the first ``LRSchedule`` in ``trainer.callbacks`` writes every group's lr from all of them (``write_lrs``)
   at ``on_train_start``, ``on_train_batch_start`` and ``on_train_batch_end``; the others' hooks do nothing;
3. a schedule appended to ``trainer.callbacks`` mid-run (``FineTuning`` adds ``LinearWarmup(warmup,
   start=epoch, groups=[name])`` for a group it unfreezes) joins the product at the next write, and
   ``restart`` writes at once;
4. after ``on_train_batch_end`` the groups hold the next step's lr, so callbacks that read it later in the same
   hook (the lr monitor) see the lr the optimizer will use.

Why not ``torch.optim.lr_scheduler``: torch's schedulers each rewrite ``group["lr"]`` from the previous
value (chaining them needs ``ChainedScheduler``/``SequentialLR`` built inside ``configure_optimizers``),
know nothing of epochs as fractions of steps, and lose groups added mid-run. Here a schedule is a
callback a recipe lists under ``trainer.callbacks``; the tests check it against torch's and timm's.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Literal, get_args

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from zoo import compat

Unit = Literal["epoch", "step"]
UNITS = get_args(Unit)


class LRSchedule(Callback):
    """A factor of the lr: lr(t) = base_lr_of_group × Π_i factor_i(t − start_i) (factor 1 before start).

    Subclasses define ``factor(t)`` for t ≥ 0 in ``unit``s, take their own parameters and pass the shared
    options below on as ``**kwargs`` (keyword-only). Every optimizer step the schedules set
    ``group["lr"] = group["base_lr"] × Π factor``; a group's ``base_lr`` is its lr when first seen, so a
    group added mid-run (fine-tuning) keeps the lr it was added with as its base, and the factors apply to
    it from then on. To warm up such a group, keep a ``LinearWarmup(groups=["backbone"], start=...)`` in
    ``trainer.callbacks`` or call ``schedule.restart(trainer, groups=[...])`` when the group is added.

    Args:
        unit: ``epoch`` or ``step``, the unit of the schedule's times (and of ``start``).
        interval: ``step`` re-evaluates every optimizer step (epochs as fractions); ``epoch`` once per epoch.
        start: time (in ``unit``) at which this factor begins, e.g. a decay after a warmup of that length.
        groups: names of the param groups it applies to (``NAME`` also covers ``NAME/no_decay``); None: all.
    """

    def __init__(
        self,
        *,
        unit: Unit = "epoch",
        interval: Unit = "step",
        start: float = 0.0,
        groups: Sequence[str] | None = None,
    ):
        if unit not in UNITS:
            raise ValueError(f"{type(self).__name__}: unit={unit!r}; choose one of {', '.join(UNITS)}")
        if interval not in UNITS:
            raise ValueError(
                f"{type(self).__name__}: interval={interval!r}; choose one of {', '.join(UNITS)}"
            )
        if not (math.isfinite(start) and start >= 0):
            raise ValueError(f"{type(self).__name__}: start={start!r} must be ≥ 0")
        self.unit, self.interval, self.start = unit, interval, float(start)
        self.groups = list(groups) if groups is not None else None
        self._init_groups = self.groups
        self.steps_per_epoch: int | None = None
        self.total_steps: int | None = None

    # --- the curve -----------------------------------------------------------------------------
    def factor(self, t: float) -> float:
        """Multiplier of the base lr at time ``t`` ≥ 0 (in ``unit``s since ``start``)."""
        raise NotImplementedError

    def breakpoints(self) -> list[tuple[float, str]]:
        """(time in ``unit``s, label) where the curve changes regime, for ``zoo schedule``."""
        return [(self.start, f"{type(self).__name__} starts")] if self.start else []

    def time(self, step: int) -> float:
        """Time of optimizer step ``step`` in ``unit``s (floored to the epoch with ``interval="epoch"``)."""
        spe = self.steps_per_epoch
        if self.interval == "epoch":
            step = (step // spe) * spe
        return step / spe if self.unit == "epoch" else float(step)

    @property
    def total(self) -> float:
        """Length of the whole run in ``unit``s."""
        return self.total_steps / self.steps_per_epoch if self.unit == "epoch" else float(self.total_steps)

    def applies_to(self, group: dict) -> bool:
        if self.groups is None:
            return True
        name = str(group.get("name", ""))
        return any(name == g or name.startswith(f"{g}/") for g in self.groups)

    def group_factor(self, group: dict, step: int) -> float:
        if not self.applies_to(group):
            return 1.0
        t = self.time(step) - self.start
        return 1.0 if t < 0 else self.factor(t)

    # --- set-up --------------------------------------------------------------------------------
    def resolve(self, steps_per_epoch: int, total_steps: float) -> None:
        """Fix the run's length (``total_steps`` is ``math.inf`` for a run with no end), then ``check``."""
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_steps = int(total_steps) if math.isfinite(total_steps) else math.inf
        self.check()

    def replan(self, steps_per_epoch: int, total_steps: float, step: int) -> None:
        """A run resumed at optimizer step ``step`` with another length: the curve is planned over the new one.
        A subclass whose past depends on the old plan refuses (e.g. snapshots already taken)."""
        self.resolve(steps_per_epoch, total_steps)

    def check(self) -> None:
        """Validate against the run's length; subclasses raise a clear error naming the value."""

    def needs_length(self) -> None:
        """A curve drawn over the run's length refuses a run with no end (``max_epochs`` and ``max_steps`` -1)."""
        if not math.isfinite(self.total):
            raise ValueError(
                f"{type(self).__name__} spreads its curve over the run's length, but the run has no end "
                "(trainer.max_epochs -1 and trainer.max_steps -1): give --trainer.max_epochs N or "
                "--trainer.max_steps N"
            )

    def restart(self, trainer, groups: Sequence[str] | None = None) -> None:
        """Begin this factor again now (e.g. a warmup of groups just unfrozen); saved in the checkpoint."""
        if self.steps_per_epoch is None:
            self.resolve(*run_length(trainer))
        self.start = self.time(trainer.global_step)
        if groups is not None:
            self.groups = list(groups)
        if self.start > self.total:
            rank_zero_warn(
                f"{type(self).__name__} restarted at {self.start:g} {self.unit}s, after the run's end"
            )
        write_lrs(trainer)  # the restart counts from this very step

    # --- Lightning hooks -----------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        if schedules_of(trainer)[0] is self:  # the first schedule re-plans a resumed run for all of them
            replan(trainer)
        self._write(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._write(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._write(trainer)  # ready before any callback (e.g. the lr monitor) reads the next step's lr

    def _write(self, trainer) -> None:
        if schedules_of(trainer)[0] is self:  # the first schedule writes for all of them
            write_lrs(trainer)

    @property
    def state_key(self) -> str:
        # Lightning reads it at every hook it calls (~10 a step) and the key is fixed at construction: built once
        if "_state_key" not in self.__dict__:
            self._state_key = compat.state_key(self, **self._key())
        return self._state_key

    def _key(self) -> dict:
        """What tells two schedules of a class apart in a checkpoint (fixed at construction)."""
        shared = {"unit": self.unit, "interval": self.interval, "groups": self._init_groups}
        return {**shared, **{name: getattr(self, name) for name in self.curve_parameters()}}

    @classmethod
    def curve_parameters(cls) -> list[str]:
        """The curve's own parameters: the subclass's constructor arguments (each stored under its name)."""
        params = inspect.signature(cls.__init__).parameters.values()
        return [
            p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]

    def state_dict(self) -> dict:
        return {
            "start": self.start,
            "groups": self.groups,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        for key in ("start", "groups", "steps_per_epoch", "total_steps"):
            setattr(self, key, state_dict[key])


def positive(schedule: LRSchedule, key: str, value: float, allow_zero: bool = False) -> float:
    """``value`` as a float, or a ValueError naming the schedule and the key when it is not > 0 (≥ 0)."""
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        must = "≥ 0" if allow_zero else "positive"
        raise ValueError(f"{type(schedule).__name__}: {key}={value!r} must be {must}")
    return float(value)


def schedules_of(trainer) -> list[LRSchedule]:
    """The trainer's schedules in callback order; the first writes the lr for all (the module's contract)."""
    return [c for c in trainer.callbacks if isinstance(c, LRSchedule)]


def run_length(trainer) -> tuple[int, float]:
    """(optimizer steps per epoch, total optimizer steps) of a fitting trainer, as Lightning counts them;
    the total is ``math.inf`` for a run with no end (``max_epochs`` and ``max_steps`` -1)."""
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        raise ValueError(
            "the training data has no length, so epochs cannot be counted: give the lr schedules unit='step' "
            "and their lengths explicitly, and set trainer.max_steps"
        )
    total = trainer.estimated_stepping_batches
    return math.ceil(batches / trainer.accumulate_grad_batches), int(total) if math.isfinite(
        total
    ) else math.inf


def lr_factor(schedules: Sequence[LRSchedule], optimizer, step: int) -> float:
    """The product of the schedules' factors at ``step`` for the optimizer's first group."""
    group = optimizer.param_groups[0]
    return math.prod(s.group_factor(group, step) for s in schedules)


def replan(trainer) -> None:
    """Schedules restored from a checkpoint of a run of another length (``--trainer.max_epochs`` raised on a
    resume) are planned over this run's length, and that is said in one line: the checkpoint's plan would have
    the run continue at its end-of-run lr (0 after a cosine decay), where the new plan has the lr of that point
    of a run this long."""
    schedules = schedules_of(trainer)
    restored = [s for s in schedules if s.steps_per_epoch is not None]
    if not restored:
        return
    spe, total = run_length(trainer)
    changed = [s for s in restored if (s.steps_per_epoch, s.total_steps) != (spe, total)]
    if not changed:
        return
    step, was = trainer.global_step, changed[0].total_steps
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    before = lr_factor(schedules, optimizer, step) if optimizer is not None else None
    for s in changed:
        s.replan(spe, total, step)
    said = (
        f"The lr schedule is re-planned over the run's new length, {total:g} optimizer steps ({spe}/epoch; the "
        f"checkpoint's run had {was:g})"
    )
    if optimizer is not None:
        after = lr_factor(schedules, optimizer, step)
        said += (
            f": at step {step} the lr is {after:.3g}× the base lr ({before:.3g}× in the checkpoint's plan)"
        )
    rank_zero_info(said)


def write_lrs(trainer) -> None:
    """Set every group's lr for the step ``trainer.global_step`` from all the trainer's schedules."""
    schedules = schedules_of(trainer)
    if not schedules:
        return
    new = [s for s in schedules if s.steps_per_epoch is None]  # not restored: the run's length fixes them
    if new:
        spe, total = run_length(trainer)
        for s in new:
            s.resolve(spe, total)
    apply_schedules(schedules, trainer.optimizers, trainer.global_step)


def apply_schedules(schedules: Sequence[LRSchedule], optimizers, step: int) -> None:
    """group["lr"] = group["base_lr"] × Π factor(step); ``base_lr`` is set from the lr on first sight."""
    for optimizer in optimizers:
        for i, group in enumerate(optimizer.param_groups):
            base = group.setdefault("base_lr", group["lr"])
            if not (math.isfinite(base) and base >= 0):
                name = group.get("name", f"pg{i}")
                raise ValueError(
                    f"param group {name!r} has lr {base!r}; a learning rate must be ≥ 0 and finite"
                )
            lr = base
            for s in schedules:
                lr *= s.group_factor(group, step)
            group["lr"] = lr


def simulate(
    schedules: Sequence[LRSchedule], optimizer, steps_per_epoch: int, total_steps: int
) -> list[list[float]]:
    """The lr of every group at every step 0..total_steps−1, by the same code as training (no training)."""
    for s in schedules:
        s.resolve(steps_per_epoch, total_steps)
    lrs = []
    for step in range(total_steps):
        apply_schedules(schedules, [optimizer], step)
        lrs.append([g["lr"] for g in optimizer.param_groups])
    return lrs
