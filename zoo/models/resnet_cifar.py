"""CIFAR ResNets of He et al. (2016, section 4.2): depth 6n + 2, three stages of n basic blocks.

The network of the stochastic-depth (Huang et al., 2016) and snapshot-ensemble (Huang et al., 2017) papers:
a 3×3 stem of 16 channels, stages of 16, 32, 64 channels on 32×32, 16×16, 8×8 maps, global average pooling,
and a 10-way fc. Shortcuts are zero-padded identities (option A: no parameters), as in the paper.
"""

from __future__ import annotations

from zoo.models.base import variant
from zoo.models.resnet import ResNet
from zoo.registry import register_model

CIFAR_DEFAULTS = {
    "num_classes": 10,
    "widths": (16, 32, 64),
    "stem": "cifar",
    "stem_width": 16,
    "shortcut": "pad",
}
_CIFAR = {
    20: "CIFAR ResNet-20 (n = 3) for 32×32 images: the small baseline of He et al.'s CIFAR-10 table.",
    32: "CIFAR ResNet-32 (n = 5) for 32×32 images.",
    56: "CIFAR ResNet-56 (n = 9) for 32×32 images.",
    110: "CIFAR ResNet-110 (n = 18) for 32×32 images: the stochastic-depth and snapshot-ensemble network.",
}
for _depth, _doc in _CIFAR.items():
    _n = (_depth - 2) // 6
    register_model(
        variant(
            ResNet, f"resnet{_depth}", _doc, fixed={"block": "basic", "layers": (_n,) * 3}, **CIFAR_DEFAULTS
        )
    )
