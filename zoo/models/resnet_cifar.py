"""CIFAR ResNets of He et al. (2016, section 4.2): depth 6n + 2, three stages of n basic blocks.

The network of the stochastic-depth (Huang et al., 2016) and snapshot-ensemble (Huang et al., 2017) papers:
a 3×3 stem of 16 channels, stages of 16, 32, 64 channels on 32×32, 16×16, 8×8 maps, global average pooling,
and a 10-way fc. Shortcuts are zero-padded identities (option A: no parameters), as in the paper.
"""

from __future__ import annotations

from zoo.models.registry import register_model
from zoo.models.resnet import ResNet, create_resnet

# the CIFAR network's defaults of the ResNet options (a user may change them; depth and blocks are fixed)
CIFAR_DEFAULTS = {
    "num_classes": 10,
    "widths": (16, 32, 64),
    "stem": "cifar",
    "stem_width": 16,
    "shortcut": "pad",
}


def create_cifar_resnet(name: str, depth: int, kwargs: dict) -> ResNet:
    """A CIFAR ResNet of ``depth`` = 6n + 2 layers: three stages of n basic blocks."""
    n = (depth - 2) // 6
    return create_resnet(name, "basic", (n, n, n), kwargs, **CIFAR_DEFAULTS)


@register_model
def resnet20(**kwargs) -> ResNet:
    """CIFAR ResNet-20 (n = 3) for 32×32 images: the small baseline of He et al.'s CIFAR-10 table."""
    return create_cifar_resnet("resnet20", 20, kwargs)


@register_model
def resnet32(**kwargs) -> ResNet:
    """CIFAR ResNet-32 (n = 5) for 32×32 images."""
    return create_cifar_resnet("resnet32", 32, kwargs)


@register_model
def resnet56(**kwargs) -> ResNet:
    """CIFAR ResNet-56 (n = 9) for 32×32 images."""
    return create_cifar_resnet("resnet56", 56, kwargs)


@register_model
def resnet110(**kwargs) -> ResNet:
    """CIFAR ResNet-110 (n = 18) for 32×32 images: the stochastic-depth and snapshot-ensemble network."""
    return create_cifar_resnet("resnet110", 110, kwargs)
