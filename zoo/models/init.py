"""Weight initialisation schemes of the lectures (docs/notes.md), applied to every conv and linear layer.

The formulas are torch's (``nn.init``) and timm's (``trunc_normal_``); this file maps the lectures' names onto
them, sets biases to 0 and norm layers to γ = 1, β = 0, and optionally zeroes the last norm of each residual
block (torch has no whole-model initialiser, hence this small function).
"""

from __future__ import annotations

import math

from timm.layers import trunc_normal_
from torch import nn

INITS = ("normal", "trunc_normal", "fan_in", "kaiming", "xavier", "default")
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def init_weight(weight, scheme: str, std: float = 0.01, act: str = "relu") -> None:
    """Initialise one weight tensor in place by ``scheme``.

    - ``normal``: W ~ N(0, σ²) with σ = ``std`` (0.01 in the lectures; fine below ~8 layers).
    - ``trunc_normal``: W ~ N_T(0, σ²), redrawn outside ±2σ (suggested in the lectures for ReLU).
    - ``fan_in``: W ~ N(0, 1/fan_in), i.e. σ = 1/sqrt(#inputs of the layer) as in the lectures.
    - ``kaiming``: W ~ N(0, 2/fan_in) (He et al. for ReLU; 2/((1 + α²)·fan_in) for Leaky ReLU α = 0.1).
    - ``xavier``: W ~ U(−a, a), a = sqrt(6/(fan_in + fan_out)) (Glorot and Bengio).
    - ``default``: leave torch's own initialisation.
    """
    if scheme == "normal":
        nn.init.normal_(weight, 0.0, std)
    elif scheme == "trunc_normal":
        trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
    elif scheme == "fan_in":
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="linear")  # gain 1: σ = 1/sqrt(fan_in)
    elif scheme == "kaiming":
        if act == "leaky_relu":
            nn.init.kaiming_normal_(weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu")
        else:
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    elif scheme == "xavier":
        nn.init.xavier_uniform_(weight)
    elif scheme != "default":
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")


def init_weights(
    model: nn.Module,
    scheme: str = "kaiming",
    std: float = 0.01,
    act: str = "relu",
    zero_init_last: bool = False,
) -> nn.Module:
    """Initialise every conv/linear weight of ``model`` by ``scheme`` (biases 0, norms γ = 1, β = 0).

    ``zero_init_last`` calls ``zero_init_last()`` on each residual block (γ = 0 in its last norm).
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"init_std must be a positive number, got {std!r}")
    for module in model.modules():
        if scheme != "default" and isinstance(module, (nn.Conv2d, nn.Linear)):
            init_weight(module.weight, scheme, std, act)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _NORMS) and getattr(module, "weight", None) is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    if zero_init_last:
        for module in model.modules():
            if hasattr(module, "zero_init_last") and module is not model:
                module.zero_init_last()
    return model
