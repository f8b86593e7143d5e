"""Mixup and CutMix of training batches, by timm's ``Mixup``, and the soft-target loss that goes with them.

timm's ``Mixup`` mixes a batch with its reverse (x_j = x_{B−1−i}) and returns soft targets with label
smoothing folded in; it needs an even batch, so a batch of odd size loses its last image for that step.
"""

from __future__ import annotations

import math

import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy


def build_mixup(
    mixup_alpha: float,
    cutmix_alpha: float,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    label_smoothing: float = 0.0,
    num_classes: int = 10,
) -> Mixup | None:
    """Mixup x̃ = λx_i + (1 − λ)x_j, ỹ = λy_i + (1 − λ)y_j, λ ~ Beta(α, α); CutMix pastes a box of x_j, λ = 1 − box area.

    None when both alphas are 0. With both on, each batch takes CutMix with ``switch_prob``; ``prob`` is
    the chance a batch is mixed at all. ``label_smoothing`` ε gives one-hot targets 1 − ε + ε/C and ε/C.
    """
    for key, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{key}={value!r} must be ≥ 0 (0: off; 0.2–1.0 are usual)")
    for key, value in (("mixup_prob", prob), ("mixup_switch_prob", switch_prob)):
        if not 0 <= value <= 1:
            raise ValueError(f"{key}={value!r} must be a probability in [0, 1]")
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return None
    return Mixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        prob=prob,
        switch_prob=switch_prob,
        mode="batch",
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )


def mix_batch(
    mixup: Mixup, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mixed images, the kept hard labels, soft targets); an odd batch drops its last image first."""
    if len(x) % 2:
        x, y = x[:-1], y[:-1]
    x = x.clone()  # timm mixes in place; the loader's tensors stay as they were
    mixed, soft = mixup(x, y)
    return mixed, y, soft


soft_target_cross_entropy = SoftTargetCrossEntropy()  # L = −Σ_j ỹ_j log p_j, averaged over the batch
