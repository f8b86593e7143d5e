"""Fine-tuning policy as pure functions: which stages train from which epoch, ``auto``'s choice, the budget.

The lectures' transfer-learning table, with a pretrained backbone and a new head:

| your data            | similar to the pretraining data     | very different                         |
|----------------------|-------------------------------------|----------------------------------------|
| very little          | linear classifier on the top layer  | hard: try linear classifiers on stages |
| quite a lot          | fine-tune a few layers              | fine-tune a larger number of layers    |

and always a smaller lr for the pretrained layers (``ImageClassifier.backbone_lr_scale``). Every strategy that
starts from pretrained features begins with a linear probe, a phase of its own before the first epoch (the head
fitted to convergence on the frozen features, :mod:`zoo.training.probe`), then fine-tunes from that head (LP-FT, Kumar et
al. 2022). A plan is a list of ``Join``s: the stages that become trainable together at a training epoch (0: the
first after the probe), and the name of their param group.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Literal, get_args

Strategy = Literal["none", "linear", "freeze_unfreeze", "full", "gradual", "auto"]
STRATEGIES = get_args(Strategy)
DESCRIPTIONS = {
    "none": "no freezing: the fine-tuning callback does nothing",
    "linear": "backbone frozen; the new head is a linear probe fitted to convergence on its features",
    "freeze_unfreeze": "linear probe, then the whole backbone joins at the reduced lr from unfreeze_epoch",
    "full": "linear probe, then every layer trains, the backbone at the reduced lr",
    "gradual": "linear probe, then backbone stages join one by one from the top, one every `every` epochs",
    "auto": "picks linear or full (probe, then fine-tune) from the data, then checks on validation that "
    "fine-tuning beats the probe",
}


@dataclass(frozen=True)
class Join:
    """Backbone ``stages`` that become trainable at ``epoch``, as the param group ``name``: ``at_start``, in the
    optimizer from the first step (``full``); else added at the start of that epoch, its lr warmed up."""

    epoch: int
    stages: tuple[str, ...]
    name: str
    at_start: bool = False


def plan(
    strategy: str,
    stages: list[str],
    unfreeze_epoch: int = 1,
    every: int = 1,
    max_stages: int | None = None,
    probe: bool = False,
) -> list[Join]:
    """The joins of a strategy over the backbone ``stages`` (top-down, head excluded), in the order they happen.

    linear: none; full: every stage at epoch 0 (group ``backbone``); freeze_unfreeze: every stage at
    ``unfreeze_epoch``; gradual: stage i (0 = the top) at ``unfreeze_epoch + i·every`` as ``backbone/<stage>``, down
    to ``max_stages`` stages (None: all). ``probe``: a linear probe fitted the head before epoch 0, so the stages
    may join from epoch 0 on (without one, epoch 0 of freeze_unfreeze / gradual trains the head alone).
    """
    if strategy not in STRATEGIES or strategy == "auto":
        raise ValueError(
            f"plan needs a resolved strategy, one of {', '.join(STRATEGIES[:-1])}; got {strategy!r}"
        )
    if strategy in ("none", "linear") or not stages:
        return []
    if strategy == "full":
        return [Join(0, tuple(stages), "backbone", at_start=True)]
    first = 0 if probe else 1
    if unfreeze_epoch < first:
        raise ValueError(
            f"finetune.unfreeze_epoch={unfreeze_epoch} must be ≥ {first} for {strategy}"
            + ("" if probe else " without a probe (from epoch 0 on is `full`)")
        )
    if strategy == "freeze_unfreeze":
        return [Join(unfreeze_epoch, tuple(stages), "backbone")]
    if every < 1:
        raise ValueError(f"finetune.every={every} must be ≥ 1 epoch between two stages")
    if max_stages is not None and max_stages < 1:
        raise ValueError(f"finetune.stages={max_stages} must be ≥ 1 (or null: every stage)")
    chosen = stages[:max_stages] if max_stages else stages
    return [Join(unfreeze_epoch + i * every, (s,), f"backbone/{s}") for i, s in enumerate(chosen)]


def images_per_class(targets) -> float:
    """Median number of training images per class (labels ``targets``), robust to a few rare classes."""
    counts: dict[int, int] = {}
    for t in targets:
        counts[int(t)] = counts.get(int(t), 0) + 1
    if not counts:
        raise ValueError("the training split is empty: no images to choose a fine-tuning strategy from")
    return float(statistics.median(counts.values()))


VERY_LITTLE = (
    25  # training images per class (median) below which auto fits the probe alone: the lectures' "very
)
# little data"; a plain folder of that size holds out no validation split either (min_per_class 5 at 0.2)


def choose(per_class: float, pretrained: bool, validated: bool = True) -> tuple[str, str]:
    """``auto``: (strategy, why), after the lectures' table (very little data → linear; more → fine-tune more).

    ``validated``: the data has a validation split. Without one there is nothing to tell a fine-tune from the
    probe with, so the probe (its C chosen by cross-validation) is the whole training; with under
    ``VERY_LITTLE`` images per class the probe is the model too (the lectures' table). Otherwise every layer
    fine-tunes from the probe's head (LP-FT, Kumar et al. 2022: after a linear probe, holding layers back has
    nothing left to protect), and the probe phase may still end the run there (:func:`trial_verdict`).
    """
    if not pretrained:
        return "full", "the model has no pretrained weights, so every layer has to be trained"
    if not validated:
        return "linear", (
            f"{per_class:g} training images per class (median) are too few to hold out a validation split that "
            "could show a fine-tune beating the probe: with very little data, a linear classifier on the "
            "frozen pretrained features"
        )
    if per_class < VERY_LITTLE:
        return "linear", (
            f"{per_class:g} training images per class (median) is very little data (under {VERY_LITTLE}): the "
            "lectures' linear classifier on the frozen pretrained features, its choices made on the validation split"
        )
    return "full", (
        f"{per_class:g} training images per class (median) and a validation split: the linear probe first, then "
        "every layer at the reduced backbone lr, kept only if it beats the probe on validation"
    )


@dataclass(frozen=True)
class Budget:
    """What a run trains for after the probe: ``batch_size`` per device, ``steps_per_epoch``, ``epochs`` and
    ``steps`` (optimizer steps), validating every ``val_every`` epochs; ``why`` says it in one line."""

    batch_size: int
    steps_per_epoch: int
    epochs: int
    steps: int
    val_every: int
    why: str


DEFAULT_BATCH = 32  # the largest batch per device the budget picks
DEFAULT_EPOCHS = 10  # training epochs after the probe, when that is more than MIN_STEPS steps
MIN_STEPS = 300  # optimizer steps after the probe, at least (small sets get more epochs)
VALIDATIONS = 10  # a sized run validates about this many times (a tenth of the budget between two)


def budget(
    images: int,
    world_size: int = 1,
    batch_size: int | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    train: bool = True,
) -> Budget:
    """Fit the run to the data: a batch of at most ``DEFAULT_BATCH`` and no larger than a device's share of the
    ``images``, then ``max(DEFAULT_EPOCHS, ⌈MIN_STEPS / steps an epoch⌉)`` epochs, validated every ⌈epochs / 10⌉.

    ``batch_size`` / ``epochs`` / ``max_steps`` given by the user are kept as they are. ``train`` False
    (``linear``): the probe is the whole run. A device's batches: ⌊share / batch⌋ (the last partial batch is
    dropped), at least 1. One-batch epochs validate every tenth of the budget, not every step.
    """
    if images < 1:
        raise ValueError("the training split is empty: nothing to fine-tune on")
    share = math.ceil(images / max(world_size, 1))
    batch = batch_size if batch_size is not None else min(DEFAULT_BATCH, share)
    if batch < 1:
        raise ValueError(f"data.batch_size={batch} must be ≥ 1")
    per_epoch = max(1, share // batch)
    said_batch = f"batch {batch}" + (" (all of them)" if batch == share and world_size == 1 else "")
    head = (
        f"{images:,} training images: {said_batch}, {per_epoch} step{'s' if per_epoch > 1 else ''} an epoch"
    )
    if not train:
        return Budget(batch, per_epoch, 0, 0, 1, f"{head}; the linear probe is the whole training")
    if max_steps is not None:
        epochs = math.ceil(max_steps / per_epoch)
        said = f"{max_steps} steps as given ({epochs} epochs)"
    elif epochs is not None:
        said = f"{epochs} epochs as given ({epochs * per_epoch} steps)"
    else:
        epochs = max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / per_epoch))
        why = f"at least {MIN_STEPS} steps" if epochs > DEFAULT_EPOCHS else f"{DEFAULT_EPOCHS} epochs"
        said = None
    every = max(1, round(epochs / VALIDATIONS))
    if said is None:  # sized here: a whole number of validation periods, the last epoch validated
        epochs = math.ceil(epochs / every) * every
        said = f"{epochs} epochs after the probe = {epochs * per_epoch} steps ({why})"
    steps = max_steps if max_steps is not None else epochs * per_epoch
    checks = f"; validation every {every} epochs ({every * per_epoch} steps)" if every > 1 else ""
    return Budget(batch, per_epoch, epochs, steps, every, f"{head}; {said}{checks}")


MIN_SHOWN_GAIN = 5  # images: the net gain a one-sided sign test at 5 % can tell from chance (0.5⁵ ≈ 0.03)


def trial_verdict(probe_top1: float, val_images: int) -> str | None:
    """Why a fine-tune cannot show a gain over the probe on a validation split of ``val_images`` images, or
    None when it can: the probe is at the ceiling (no error left), or it misses fewer than ``MIN_SHOWN_GAIN``
    images, the fewest a fine-tune must fix (net of those it breaks) for the gain to stand out from chance."""
    errors = round((1.0 - probe_top1) * val_images)
    if errors <= 0:
        return f"the probe classifies all {val_images} validation images correctly: no gain left to show"
    if errors < MIN_SHOWN_GAIN:
        return (
            f"the probe misses {errors} of {val_images} validation images, and a gain the split can show (a "
            f"sign test at 5 %) needs a fine-tune that gets {MIN_SHOWN_GAIN} more right than it gets wrong"
        )
    return None


@dataclass
class Plateau:
    """Patience on two validation metrics: an improvement is a loss below (1 − ``rel_delta``) × the lowest so far
    or a top-1 above the highest so far; ``stalled`` after ``patience`` validations with neither. Top-1 alone
    saturates on small validation sets, so the loss counts too."""

    patience: int
    rel_delta: float = 0.01
    best_loss: float = math.inf
    best_top1: float = -math.inf
    best_step: int = 0
    waited: int = 0

    def update(self, loss: float, top1: float, step: int) -> bool:
        """Record a validation; True when it improved on the best so far."""
        better_loss = loss < (1.0 - self.rel_delta) * self.best_loss
        better_top1 = top1 > self.best_top1
        self.best_loss = min(self.best_loss, loss)
        self.best_top1 = max(self.best_top1, top1)
        if better_loss or better_top1:
            self.best_step, self.waited = step, 0
            return True
        self.waited += 1
        return False

    @property
    def stalled(self) -> bool:
        return self.patience > 0 and self.waited >= self.patience
