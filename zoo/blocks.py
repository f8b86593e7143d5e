"""Documented building blocks; each states its rule from the notes in one docstring line."""

from __future__ import annotations

from torch import nn

NORMS = ("batch", "layer", "instance", "group", "none")
ACTS = ("relu", "leaky_relu", "gelu", "silu", "none")


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalisation over a N×C×H×W map: batch (per C over N,H,W), layer (per sample over C,H,W),
    instance (per sample and C over H,W), group (per sample over channel groups), or none."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)  # one group = LayerNorm over (C, H, W)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(min(32, channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def make_act(act: str, negative_slope: float = 0.1) -> nn.Module:
    """Activation: ReLU max(0, x); Leaky ReLU max(αx, x) with α = 0.1 as in the notes; GELU; SiLU."""
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "leaky_relu":
        return nn.LeakyReLU(negative_slope, inplace=True)
    if act == "gelu":
        return nn.GELU()
    if act == "silu":
        return nn.SiLU(inplace=True)
    if act == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTS)}")


class ConvNormAct(nn.Sequential):
    """conv → norm → act; output W2 = (W1 − F + 2P)/S + 1 with P = (F − 1)/2 by default."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        norm: str = "batch",
        act: str = "relu",
    ):
        padding = (kernel_size - 1) // 2 if padding is None else padding
        super().__init__(
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, bias=norm == "none"),
            make_norm(norm, out_chans),
            make_act(act),
        )
