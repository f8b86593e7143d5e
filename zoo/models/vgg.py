"""VGG (Simonyan and Zisserman, 2015): stacks of 3×3 convs (stride 1, pad 1) and 2×2 stride-2 max-pooling.

``vgg11/13/16/19`` and their ``_bn`` variants (conv → BatchNorm → ReLU). Module names equal torchvision's
(``features.N``, ``classifier.N``), so a torchvision weight file loads through ``pretrained_path``, and the
parameter counts equal torchvision's (138,357,544 for vgg16 with 1000 classes).
"""

from __future__ import annotations

from torch import nn

from zoo.models.base import ZooModel, build_model, no_residuals, set_cfg
from zoo.models.blocks import make_act, make_linear, make_norm, make_pool
from zoo.models.init import init_weights
from zoo.models.registry import register_model

# channels of each 3×3 conv; "M" is a 2×2 stride-2 pooling (W → W/2)
CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ),
}


class VGG(ZooModel):
    """3×3 conv stages → adaptive average pool to ``pool_size``² → fc-act-dropout ×2 → fc.

    Args:
        depth: 11, 13, 16 or 19 weight layers.
        norm: ``none`` (the original), ``batch`` (the ``_bn`` variants), ``layer``, ``instance``, ``group``.
        act: activation after each conv and hidden fc (``zoo.models.blocks.make_act``).
        pool: ``max`` (the original), ``avg`` or ``fractional`` pooling between stages.
        pool_size: side of the pooled map fed to the classifier (7 for 224×224 inputs; 1 for 32×32).
        fc_width: width of the two hidden fc layers (4096 in the paper).
        drop_rate: inverted dropout after each hidden fc (0.5 in the paper).
        drop_connect_rate: DropConnect on the weights of the two hidden fc layers.
        init, init_std: initialisation scheme (``zoo.models.init``).
    """

    def __init__(
        self,
        depth: int = 16,
        num_classes: int = 1000,
        in_chans: int = 3,
        norm: str = "none",
        act: str = "relu",
        pool: str = "max",
        pool_size: int = 7,
        fc_width: int = 4096,
        drop_rate: float = 0.5,
        drop_connect_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init: str = "kaiming",
        init_std: float = 0.01,
    ):
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"VGG depth must be one of {', '.join(map(str, CONFIGS))}, not {depth}")
        no_residuals(f"vgg{depth}", drop_path_rate)
        layers: list[nn.Module] = []
        chans, self.stage_ends = in_chans, []
        for v in CONFIGS[depth]:
            if v == "M":
                layers.append(make_pool(pool))
                self.stage_ends.append(len(layers) - 1)
                continue
            layers.append(nn.Conv2d(chans, v, 3, padding=1))  # torchvision keeps the bias, even with BN
            if norm != "none":
                layers.append(make_norm(norm, v))
            layers.append(make_act(act))
            chans = v
        self.features = nn.Sequential(*layers)
        self.num_features = chans
        self.drop_rate = drop_rate
        self.global_pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            make_linear(chans * pool_size * pool_size, fc_width, drop_connect_rate),
            make_act(act),
            nn.Dropout(drop_rate),
            make_linear(fc_width, fc_width, drop_connect_rate),
            make_act(act),
            nn.Dropout(drop_rate),
            nn.Linear(fc_width, num_classes) if num_classes > 0 else nn.Identity(),
        )
        init_weights(self, init, init_std, act)
        set_cfg(self, 224, in_chans, num_classes, "features.0")
        self.pretrained_cfg["classifier"] = "classifier.6"

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.classifier[:-1](self.global_pool(x).flatten(1))
        return x if pre_logits else self.classifier[-1](x)

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        width = self.classifier[3].out_features
        self.classifier[-1] = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()

    def group_matcher(self, coarse: bool = False):
        """Stages for ``timm.models.group_modules``: one per pooling stage (or per conv), fc6, fc7, head."""
        ends = self.stage_ends

        def match(name: str) -> tuple[int, ...]:
            part, index = name.split(".")[:2]
            if part == "features":
                stage = sum(int(index) > e for e in ends)
                return (stage,) if coarse else (stage, int(index))
            return (float("inf"),) if index == "6" else (len(ends) + int(index),)

        return match


def create_vgg(name: str, kwargs: dict, **fixed) -> VGG:
    """The builder of every registered VGG: ``fixed`` are the variant's (``depth``, and ``norm`` of the
    ``_bn`` variants), ``kwargs`` the user's options (see :func:`zoo.models.base.build_model`)."""
    return build_model(VGG, name, kwargs, fixed=fixed)


@register_model
def vgg11(**kwargs) -> VGG:
    """VGG-11 (configuration A): plain 3×3 conv stack for 224×224; most weights in its fc layers."""
    return create_vgg("vgg11", kwargs, depth=11)


@register_model
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with BatchNorm after every conv: trains from scratch without careful init."""
    return create_vgg("vgg11_bn", kwargs, depth=11, norm="batch")


@register_model
def vgg13(**kwargs) -> VGG:
    """VGG-13 (configuration B): plain 3×3 conv stack for 224×224; most weights in its fc layers."""
    return create_vgg("vgg13", kwargs, depth=13)


@register_model
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with BatchNorm after every conv: trains from scratch without careful init."""
    return create_vgg("vgg13_bn", kwargs, depth=13, norm="batch")


@register_model
def vgg16(**kwargs) -> VGG:
    """VGG-16 (configuration D): plain 3×3 conv stack for 224×224; most weights in its fc layers."""
    return create_vgg("vgg16", kwargs, depth=16)


@register_model
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with BatchNorm after every conv: trains from scratch without careful init."""
    return create_vgg("vgg16_bn", kwargs, depth=16, norm="batch")


@register_model
def vgg19(**kwargs) -> VGG:
    """VGG-19 (configuration E): plain 3×3 conv stack for 224×224; most weights in its fc layers."""
    return create_vgg("vgg19", kwargs, depth=19)


@register_model
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with BatchNorm after every conv: trains from scratch without careful init."""
    return create_vgg("vgg19_bn", kwargs, depth=19, norm="batch")
