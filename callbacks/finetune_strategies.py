"""Fine-tuning policy as pure functions: which stages train from which epoch, ``auto``'s choice, the budget.

The lectures' transfer-learning table, with a pretrained backbone and a new head:

| your data            | similar to the pretraining data     | very different                         |
|----------------------|-------------------------------------|----------------------------------------|
| very little          | linear classifier on the top layer  | hard: try linear classifiers on stages |
| quite a lot          | fine-tune a few layers              | fine-tune a larger number of layers    |

and always a smaller lr for the pretrained layers (``ImageClassifier.backbone_lr_scale``). Every strategy that
starts from pretrained features begins with a linear probe (epoch 0: the head fitted to convergence on the
frozen features, :mod:`zoo.probe`), then fine-tunes from that head (LP-FT, Kumar et al. 2022). A plan is a list
of ``Join``s: the stages that become trainable together at an epoch, and the name of their param group.
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
    "auto": "picks linear, freeze_unfreeze (probe, then fine-tune) or full from the data, then checks on "
    "validation that fine-tuning beats the probe",
}


@dataclass(frozen=True)
class Join:
    """Backbone ``stages`` that become trainable at ``epoch``, as the param group ``name``."""

    epoch: int
    stages: tuple[str, ...]
    name: str


def plan(
    strategy: str, stages: list[str], unfreeze_epoch: int = 1, every: int = 1, max_stages: int | None = None
) -> list[Join]:
    """The joins of a strategy over the backbone ``stages`` (top-down, head excluded), in the order they happen.

    linear: none; full: every stage at epoch 0 (group ``backbone``; with a probe it first trains at epoch 1);
    freeze_unfreeze: every stage at ``unfreeze_epoch``; gradual: stage i (0 = the top) at
    ``unfreeze_epoch + i·every`` as ``backbone/<stage>``, down to ``max_stages`` stages (None: all).
    """
    if strategy not in STRATEGIES or strategy == "auto":
        raise ValueError(
            f"plan needs a resolved strategy, one of {', '.join(STRATEGIES[:-1])}; got {strategy!r}"
        )
    if strategy in ("none", "linear") or not stages:
        return []
    if strategy == "full":
        return [Join(0, tuple(stages), "backbone")]
    if unfreeze_epoch < 1:
        raise ValueError(
            f"finetune.unfreeze_epoch={unfreeze_epoch} must be ≥ 1 for {strategy} (from epoch 0 on is `full`)"
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


def choose(
    per_class: float, pretrained: bool, validated: bool = True, full_from: int = 1000
) -> tuple[str, str]:
    """``auto``: (strategy, why), after the lectures' table (very little data → linear; more → fine-tune more).

    ``validated``: the data has a validation split. Without one there is nothing to tell a fine-tune from the
    probe with, so the probe (its C chosen by cross-validation) is the whole training.
    """
    if not pretrained:
        return "full", "the model has no pretrained weights, so every layer has to be trained"
    if not validated:
        return "linear", (
            f"{per_class:g} training images per class (median) are too few to hold out a validation split that "
            "could show a fine-tune beating the probe: with very little data, a linear classifier on the "
            "frozen pretrained features"
        )
    if per_class < full_from:
        return "freeze_unfreeze", (
            f"{per_class:g} training images per class (median), under {full_from}: the linear probe first, then "
            "the whole network at the reduced backbone lr, kept only if it beats the probe on validation"
        )
    return "full", (
        f"{per_class:g} training images per class (median) is {full_from} or more: the linear probe, then every "
        "layer at the reduced backbone lr"
    )


@dataclass(frozen=True)
class Budget:
    """What a run trains for: ``batch_size`` per device, ``steps_per_epoch``, ``epochs`` in all (the probe's
    included) and ``steps`` (optimizer steps after the probe); ``why`` says it in one line."""

    batch_size: int
    steps_per_epoch: int
    epochs: int
    steps: int
    why: str


def budget(
    images: int,
    world_size: int = 1,
    batch_size: int | None = None,
    epochs: int | None = None,
    default_batch: int = 32,
    default_epochs: int = 10,
    min_steps: int = 300,
    probe: bool = True,
    train: bool = True,
) -> Budget:
    """Fit the run to the data: a batch no larger than a device's share of the ``images``, and at least
    ``min_steps`` optimizer steps after the probe epoch (``default_epochs`` epochs when that is more).

    ``batch_size`` / ``epochs`` given by the user are kept as they are. ``train`` False (``linear``): the probe
    is the whole run. A device's batches: ⌊share / batch⌋ (the last partial batch is dropped), at least 1.
    """
    if images < 1:
        raise ValueError("the training split is empty: nothing to fine-tune on")
    share = math.ceil(images / max(world_size, 1))
    batch = batch_size if batch_size is not None else min(default_batch, share)
    if batch < 1:
        raise ValueError(f"data.batch_size={batch} must be ≥ 1")
    per_epoch = max(1, share // batch)
    said_batch = f"batch {batch}" + (" (all of them)" if batch == share and world_size == 1 else "")
    head = (
        f"{images:,} training images: {said_batch}, {per_epoch} step{'s' if per_epoch > 1 else ''} an epoch"
    )
    if not train:
        return Budget(batch, per_epoch, 1, 0, f"{head}; the linear probe is the whole training (1 epoch)")
    first = 1 if probe else 0
    if epochs is not None:
        steps = max(epochs - first, 0) * per_epoch
        return Budget(batch, per_epoch, epochs, steps, f"{head}; {epochs} epochs as given ({steps} steps)")
    tuned = max(default_epochs, math.ceil(min_steps / per_epoch))
    steps = tuned * per_epoch
    why = f"at least {min_steps} steps" if tuned > default_epochs else f"{default_epochs} epochs"
    probe_said = "1 probe epoch + " if probe else ""
    return Budget(
        batch,
        per_epoch,
        first + tuned,
        steps,
        f"{head}; {probe_said}{tuned} epochs of training = {steps} steps ({why})",
    )
