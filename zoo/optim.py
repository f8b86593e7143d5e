"""Optimizer factory: the optimizers of the notes by name, from torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class OptimizerConfig:
    """Which optimizer and its hyper-parameters; ``lr`` is the base learning rate of the head group."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def build_optimizer(params, config: OptimizerConfig) -> torch.optim.Optimizer:
    """Build ``config.name`` over ``params`` (a module, parameters or param-group dicts)."""
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.name!r}; choose one of sgd, adam")
