"""What every zoo model shares: timm's model interface, so zoo models and timm backbones are used alike.

``forward_features`` → ``forward_head``; ``get_classifier``/``reset_classifier``; ``group_matcher`` (read by
``timm.models.group_modules`` to list stages for fine-tuning); ``pretrained_cfg`` (read by
``timm.data.resolve_data_config`` for the default input size, mean and std).
"""

from __future__ import annotations

import inspect

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from zoo.models.blocks import make_linear
from zoo.models.registry import unknown_options


class ZooModel(nn.Module):
    """Base of the zoo's families: ``forward(x) = forward_head(forward_features(x))``; the head is ``self.fc``."""

    fc: nn.Module
    num_features: int
    drop_rate: float = 0.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        rate = getattr(self.fc, "p", 0.0)  # keep DropConnect on a new head
        self.fc = make_linear(self.num_features, num_classes, rate) if num_classes > 0 else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        raise NotImplementedError


def set_cfg(model: ZooModel, input_size: int, in_chans: int, num_classes: int, first_conv: str) -> None:
    """Record the default input size and normalisation as ``pretrained_cfg``, the attribute timm reads."""
    mean, std = (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD) if in_chans == 3 else ((0.5,) * in_chans,) * 2
    model.num_classes = num_classes
    model.pretrained_cfg = {
        "input_size": (in_chans, input_size, input_size),
        "interpolation": "bilinear",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": mean,
        "std": std,
        "num_classes": num_classes,
        "first_conv": first_conv,
        "classifier": "fc",
    }


def no_residuals(name: str, drop_path_rate: float) -> None:
    """A family without residual branches refuses ``drop_path_rate`` instead of silently ignoring it."""
    if drop_path_rate:
        raise ValueError(
            f"{name} has no residual branches, so drop_path_rate={drop_path_rate} has nothing to drop; "
            "use drop_rate (dropout) here, or a resnet for stochastic depth."
        )


def build_model(
    cls: type[ZooModel], name: str, kwargs: dict, fixed: dict | None = None, defaults: dict | None = None
) -> ZooModel:
    """``cls(**fixed, **defaults, **kwargs)``: the one builder under every registered zoo model.

    ``fixed`` are the variant's own arguments (``layers`` of ``resnet50``), not options; ``defaults`` are the
    variant's defaults of options (``num_classes=10`` of the CIFAR ResNets); ``kwargs`` are the user's, and
    must be options: arguments of ``cls`` not in ``fixed`` (else the error lists them). The model keeps the
    options it was built with as ``options``, which is what ``zoo.models.registry.model_options`` reads.
    """
    fixed, defaults = dict(fixed or {}), dict(defaults or {})
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    options = {p.name: defaults.get(p.name, p.default) for p in params if p.name not in fixed}
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(unknown_options(name, unknown, options))
    model = cls(**fixed, **{**defaults, **kwargs})
    model.options = {**options, **kwargs}
    return model
