"""Fine-tuning strategies by name: which backbone stages train from which epoch, and ``auto``'s choice.

The notes' transfer-learning table, with a pretrained backbone and a new head:

| your data            | similar to the pretraining data     | very different                         |
|----------------------|-------------------------------------|----------------------------------------|
| very little          | linear classifier on the top layer  | hard: try linear classifiers on stages |
| quite a lot          | fine-tune a few layers              | fine-tune a larger number of layers    |

and always a smaller lr for the pretrained layers (``ImageClassifier.backbone_lr_scale``). A plan is a list of
``Join``s: the stages that become trainable together at an epoch, and the name of their param group.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal, get_args

Strategy = Literal["none", "linear", "freeze_unfreeze", "full", "gradual", "auto"]
STRATEGIES = get_args(Strategy)
DESCRIPTIONS = {
    "none": "no freezing: the fine-tuning callback does nothing",
    "linear": "backbone frozen, only the new head trains (a linear classifier on the pretrained features)",
    "freeze_unfreeze": "the head alone for unfreeze_epoch epochs, then the whole backbone at the reduced lr",
    "full": "every layer from the start, the backbone at the reduced lr",
    "gradual": "backbone stages unfrozen one by one from the top down, one every `every` epochs",
    "auto": "picks linear, freeze_unfreeze or full from the training images per class",
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

    linear: none; full: every stage at epoch 0 (group ``backbone``); freeze_unfreeze: every stage at
    ``unfreeze_epoch``; gradual: stage i (0 = the top) at ``unfreeze_epoch + i·every`` as ``backbone/<stage>``,
    down to ``max_stages`` stages (None: all).
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
    per_class: float, pretrained: bool, linear_below: int = 100, full_from: int = 1000
) -> tuple[str, str]:
    """``auto``: (strategy, why), after the notes' table (very little data → linear; more → fine-tune more)."""
    if not pretrained:
        return "full", "the model has no pretrained weights, so every layer has to be trained"
    if per_class < linear_below:
        return "linear", (
            f"{per_class:g} training images per class (median) is under {linear_below}: with very little data, "
            "train a linear classifier on the frozen pretrained features"
        )
    if per_class < full_from:
        return "freeze_unfreeze", (
            f"{per_class:g} training images per class (median) is between {linear_below} and {full_from}: train "
            "the new head first, then fine-tune the whole network at the reduced backbone lr"
        )
    return "full", (
        f"{per_class:g} training images per class (median) is {full_from} or more: with plenty of data, "
        "fine-tune every layer from the start at the reduced backbone lr"
    )
