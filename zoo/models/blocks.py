"""Documented building blocks; each states its rule (see docs/notes.md) in one docstring line.

Torch and timm already implement most operations (``nn.Conv2d``, ``nn.BatchNorm2d``; inverted dropout is
``nn.Dropout``, channel dropout ``nn.Dropout2d``, stochastic depth ``timm.layers.DropPath``, LayerNorm over
(C, H, W) ``timm.layers.GroupNorm1``): the models use those directly. This file picks the lectures' defaults
(Leaky ReLU slope 0.1, padding (F − 1)/2), chooses among them by name (``make_norm``, ``make_act``,
``make_pool``), adds what neither library has (DropConnect, fractional max pooling with fixed test-time
regions, He et al.'s zero-padded shortcut), and assembles the residual blocks of the zoo's ResNets with module
names equal to torchvision's, so torchvision weight files load unchanged.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, GroupNorm1
from torch import nn

NORMS = ("batch", "layer", "instance", "group", "none")
ACTS = ("relu", "leaky_relu", "gelu", "silu", "elu", "none")
POOLS = ("max", "avg", "fractional")


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalisation over a N×C×H×W map: batch (per C over N,H,W), layer (per sample over C,H,W),
    instance (per sample and C over H,W), group (per sample over channel groups), or none."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return GroupNorm1(channels)  # one group = LayerNorm over (C, H, W), as in the lectures' figure
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(min(32, channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def make_act(act: str, negative_slope: float = 0.1) -> nn.Module:
    """Activation: ReLU max(0, x); Leaky ReLU max(αx, x) with α = 0.1 as in the lectures; GELU; SiLU; ELU."""
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "leaky_relu":
        return nn.LeakyReLU(negative_slope, inplace=True)
    if act == "gelu":
        return nn.GELU()
    if act == "silu":
        return nn.SiLU(inplace=True)
    if act == "elu":
        return nn.ELU(inplace=True)
    if act == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTS)}")


def make_pool(pool: str, kernel_size: int = 2, stride: int | None = None) -> nn.Module:
    """Pooling: 2×2 stride-2 max (or average) pooling halves W and H; fractional max pooling by 1/√2."""
    stride = kernel_size if stride is None else stride
    if pool == "max":
        return nn.MaxPool2d(kernel_size, stride)
    if pool == "avg":
        return nn.AvgPool2d(kernel_size, stride)
    if pool == "fractional":
        return FractionalMaxPool(kernel_size, output_ratio=2**-0.5)
    raise ValueError(f"unknown pooling {pool!r}; choose one of {', '.join(POOLS)}")


class FractionalMaxPool(nn.FractionalMaxPool2d):
    """Fractional max pooling W → ⌊W/√2⌋: train random regions (u ~ U(0, 1) per map); test fixed regions (u = 0.5).

    torch's ``nn.FractionalMaxPool2d`` draws new regions in eval mode too, so a model's test outputs would
    change from call to call; the lectures' first test-time choice, pre-determined regions, is used here.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        samples = x.new_full((*x.shape[:-2], 2), 0.5).reshape(-1 if x.dim() == 4 else 1, x.shape[-3], 2)
        return nn.functional.fractional_max_pool2d(
            x, self.kernel_size, self.output_size, self.output_ratio, _random_samples=samples
        )


class ConvNormAct(nn.Sequential):
    """conv → norm → act; output W2 = (W1 − F + 2P)/S + 1 with P = (F − 1)/2 by default.

    Not ``timm.layers.ConvNormAct``: that one names its parts ``conv``/``bn`` and takes timm's norm and act
    layers; this keeps the ``features.0.0`` keys of the zoo's checkpoints and the names of ``make_norm``.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        norm: str = "batch",
        act: str = "relu",
        bias: bool | None = None,
    ):
        padding = (kernel_size - 1) // 2 if padding is None else padding
        bias = norm == "none" if bias is None else bias  # a norm's β makes the conv bias redundant
        super().__init__(
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, bias=bias),
            make_norm(norm, out_chans),
            make_act(act),
        )


class DropConnectLinear(nn.Linear):
    """DropConnect: train y = (W ⊙ M/(1 − p))·x + b, M ~ Bernoulli(1 − p) per weight, per batch; test y = W·x + b.

    Neither torch nor timm has it (timm's ``drop_connect`` is DropPath), so it is written here: a plain
    ``nn.Linear`` with the same parameters and state-dict keys, masking its weights while training.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.0):
        super().__init__(in_features, out_features, bias)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_connect_rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return super().forward(x)
        mask = torch.empty_like(self.weight).bernoulli_(1.0 - self.p)
        return nn.functional.linear(x, self.weight * mask / (1.0 - self.p), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


def make_linear(in_features: int, out_features: int, drop_connect_rate: float = 0.0) -> nn.Linear:
    """Fully connected layer y = W·x + b, with DropConnect on its weights when ``drop_connect_rate`` > 0."""
    if drop_connect_rate:
        return DropConnectLinear(in_features, out_features, p=drop_connect_rate)
    return nn.Linear(in_features, out_features)


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> list[float]:
    """Huang et al.'s linear decay rule: block l of L drops its branch with (l/L)·(1 − p_L) = (l/L)·rate.

    In the paper p_l is the survival probability, p_l = 1 − (l/L)(1 − p_L); ``drop_path_rate`` is the last
    block's drop probability 1 − p_L (0.5 in the paper). timm's ``DropPath`` drops with these rates:
    train y = b·m/(1 − p), m ~ Bernoulli(1 − p) per sample; test y = b.
    """
    return [drop_path_rate * (i + 1) / num_blocks for i in range(num_blocks)]


class PadShortcut(nn.Module):
    """He et al.'s option-A shortcut: identity subsampled by the stride, channels zero-padded (no parameters).

    The subsampling x[:, :, ::S, ::S] is the 1×1, stride-S average pooling of the stochastic-depth paper's
    code, so this is also that paper's downsampling shortcut (average pooling and zero padding).
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_chans - in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def make_shortcut(
    in_chans: int, out_chans: int, stride: int, norm: str, kind: str = "conv"
) -> nn.Module | None:
    """Projection shortcut 1×1 conv (stride S) → norm (option B), or zero-padding (option A); None = identity."""
    if stride == 1 and in_chans == out_chans:
        return None
    if kind == "pad":
        return PadShortcut(in_chans, out_chans, stride)
    if kind == "conv":
        return nn.Sequential(
            nn.Conv2d(in_chans, out_chans, 1, stride, bias=norm == "none"), make_norm(norm, out_chans)
        )
    raise ValueError(f"unknown shortcut {kind!r}; choose 'conv' (1×1 projection) or 'pad' (zero padding)")


class BasicBlock(nn.Module):
    """Residual basic block: y = act(x + DropPath(norm(conv3×3(act(norm(conv3×3(x))))))), two 3×3 convs."""

    expansion = 1

    def __init__(
        self,
        in_chans: int,
        planes: int,
        stride: int = 1,
        norm: str = "batch",
        act: str = "relu",
        drop_path: float = 0.0,
        shortcut: str = "conv",
    ):
        super().__init__()
        out_chans = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chans, planes, 3, stride, 1, bias=norm == "none")
        self.bn1 = make_norm(norm, planes)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(planes, out_chans, 3, 1, 1, bias=norm == "none")
        self.bn2 = make_norm(norm, out_chans)
        self.drop_path = DropPath(drop_path)
        self.downsample = make_shortcut(in_chans, out_chans, stride, norm, shortcut)
        self.act2 = make_act(act)

    def zero_init_last(self) -> None:
        """γ = 0 in the last norm: the block starts as the identity, y = act(x)."""
        if getattr(self.bn2, "weight", None) is not None:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(shortcut + self.drop_path(x))


class Bottleneck(nn.Module):
    """Residual bottleneck: 1×1 reduce → 3×3 (stride S) → 1×1 expand ×4, y = act(x + DropPath(branch))."""

    expansion = 4

    def __init__(
        self,
        in_chans: int,
        planes: int,
        stride: int = 1,
        norm: str = "batch",
        act: str = "relu",
        drop_path: float = 0.0,
        shortcut: str = "conv",
    ):
        super().__init__()
        out_chans = planes * self.expansion
        self.conv1 = nn.Conv2d(in_chans, planes, 1, bias=norm == "none")
        self.bn1 = make_norm(norm, planes)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=norm == "none")
        self.bn2 = make_norm(norm, planes)
        self.act2 = make_act(act)
        self.conv3 = nn.Conv2d(planes, out_chans, 1, bias=norm == "none")
        self.bn3 = make_norm(norm, out_chans)
        self.drop_path = DropPath(drop_path)
        self.downsample = make_shortcut(in_chans, out_chans, stride, norm, shortcut)
        self.act3 = make_act(act)

    def zero_init_last(self) -> None:
        """γ = 0 in the last norm: the block starts as the identity, y = act(x)."""
        if getattr(self.bn3, "weight", None) is not None:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(shortcut + self.drop_path(x))
