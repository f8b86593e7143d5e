"""ResNet (He et al., 2016) built from the zoo's residual blocks: ImageNet resnet18/34/50/101/152.

Module names equal torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``fc``), so a torchvision weight
file loads through ``pretrained_path``; parameter counts equal torchvision's exactly. The same class builds
the CIFAR ResNets of ``resnet_cifar.py`` with a 3×3 stem.
"""

from __future__ import annotations

from torch import nn

from zoo.models.base import ZooModel, build_model, set_cfg
from zoo.models.blocks import BasicBlock, Bottleneck, drop_path_rates, make_act, make_linear, make_norm
from zoo.models.init import init_weights
from zoo.models.registry import register_model

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(ZooModel):
    """Stem → stages of residual blocks (the first of each stage may stride 2) → global average pool → fc.

    Args:
        block: ``basic`` (two 3×3 convs) or ``bottleneck`` (1×1, 3×3, 1×1 ×4).
        layers: blocks per stage, e.g. (2, 2, 2, 2) for resnet18.
        widths: channels of each stage (×4 at the output of a bottleneck).
        stem: ``imagenet`` (7×7 stride 2 conv, 3×3 stride 2 max-pool: W/4) or ``cifar`` (3×3 stride 1 conv).
        stem_width: channels of the stem conv.
        shortcut: ``conv`` (1×1 projection, option B) or ``pad`` (zero-padded identity, option A).
        norm, act: see ``zoo.models.blocks.make_norm`` and ``make_act``.
        drop_rate: inverted dropout before the classifier.
        drop_path_rate: stochastic depth of the last block; block l of L drops with (l/L)·drop_path_rate.
        drop_connect_rate: DropConnect on the classifier's weights.
        init, init_std: initialisation scheme (``zoo.models.init``); ``zero_init_last`` zeroes each block's last γ.
    """

    def __init__(
        self,
        block: str = "basic",
        layers: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        stem: str = "imagenet",
        stem_width: int = 64,
        shortcut: str = "conv",
        norm: str = "batch",
        act: str = "relu",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_connect_rate: float = 0.0,
        init: str = "kaiming",
        init_std: float = 0.01,
        zero_init_last: bool = False,
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
        if len(widths) != len(layers):
            raise ValueError(f"widths {tuple(widths)} and layers {tuple(layers)} need one entry per stage")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(
                f"unknown stem {stem!r}; choose 'imagenet' (7×7/2 + max-pool) or 'cifar' (3×3/1)"
            )
        Block = BLOCKS[block]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=norm == "none")
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=norm == "none")
        self.bn1 = make_norm(norm, stem_width)
        self.act1 = make_act(act)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()

        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        chans, self.stage_names = stem_width, []
        for i, (width, depth) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(Block(chans, width, stride, norm, act, next(rates), shortcut))
                chans = width * Block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{i + 1}")
        self.num_features = chans
        self.drop_rate = drop_rate
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)  # inverted: y = x·m/(1 − p) in training, y = x at test
        self.fc = make_linear(chans, num_classes, drop_connect_rate) if num_classes > 0 else nn.Identity()
        init_weights(self, init, init_std, act, zero_init_last)
        set_cfg(self, 224 if stem == "imagenet" else 32, in_chans, num_classes, "conv1")

    def forward_features(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def group_matcher(self, coarse: bool = False) -> dict:
        """Stages for ``timm.models.group_modules``: stem, then each stage (or each block when not coarse)."""
        return {"stem": r"^conv1|bn1|maxpool", "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"}


def create_resnet(name: str, block: str, layers: tuple[int, ...], kwargs: dict, **defaults) -> ResNet:
    """The builder of every registered ResNet: ``block`` and ``layers`` are the variant's, ``defaults`` its
    defaults of options, ``kwargs`` the user's options (see :func:`zoo.models.base.build_model`)."""
    return build_model(ResNet, name, kwargs, fixed={"block": block, "layers": layers}, defaults=defaults)


@register_model
def resnet18(**kwargs) -> ResNet:
    """ImageNet ResNet-18, basic blocks (2, 2, 2, 2): a fast 224×224 baseline."""
    return create_resnet("resnet18", "basic", (2, 2, 2, 2), kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ImageNet ResNet-34, basic blocks (3, 4, 6, 3)."""
    return create_resnet("resnet34", "basic", (3, 4, 6, 3), kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    """ImageNet ResNet-50, bottlenecks (3, 4, 6, 3): the standard benchmark."""
    return create_resnet("resnet50", "bottleneck", (3, 4, 6, 3), kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    """ImageNet ResNet-101, bottlenecks (3, 4, 23, 3): large data."""
    return create_resnet("resnet101", "bottleneck", (3, 4, 23, 3), kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    """ImageNet ResNet-152, bottlenecks (3, 8, 36, 3): large data."""
    return create_resnet("resnet152", "bottleneck", (3, 8, 36, 3), kwargs)
