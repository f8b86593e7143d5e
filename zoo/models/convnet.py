"""A small VGG-style CNN for tiny images (8×8 digits, 32×32 CIFAR): conv-norm-act stages, pooling,
dropout before the classifier."""

from __future__ import annotations

from torch import nn

from zoo.models.base import ZooModel, build_model, no_residuals, set_cfg
from zoo.models.blocks import ConvNormAct, make_linear, make_pool
from zoo.models.init import init_weights
from zoo.models.registry import register_model


class ConvNet(ZooModel):
    """Stages of ``depth`` 3×3 ConvNormAct blocks, each stage followed by 2×2 stride-2 pooling (W → W/2);
    then global average pooling, dropout (inverted, rate ``drop_rate``) and a linear classifier.

    Args:
        widths: channels of each stage.
        depth: ConvNormAct blocks per stage.
        norm, act: see ``zoo.models.blocks.make_norm`` and ``make_act``.
        pool: ``max``, ``avg`` or ``fractional`` pooling after each stage.
        drop_rate: inverted dropout before the classifier.
        channel_drop_rate: spatial dropout of whole feature maps after each stage.
        drop_connect_rate: DropConnect on the classifier's weights.
        init, init_std: initialisation scheme (``zoo.models.init``); ``default`` keeps torch's
            U(−b, b), b = 1/sqrt(fan_in) for the weights, which suits a network this shallow.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64),
        depth: int = 2,
        norm: str = "batch",
        act: str = "relu",
        pool: str = "max",
        drop_rate: float = 0.25,
        channel_drop_rate: float = 0.0,
        drop_connect_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init: str = "default",
        init_std: float = 0.01,
    ):
        super().__init__()
        no_residuals("convnet", drop_path_rate)
        layers: list[nn.Module] = []
        chans = in_chans
        for width in widths:
            for _ in range(depth):
                layers.append(ConvNormAct(chans, width, 3, norm=norm, act=act))
                chans = width
            layers.append(make_pool(pool))
            if channel_drop_rate:
                layers.append(nn.Dropout2d(channel_drop_rate))  # y[n, c] = x[n, c]·m[n, c]/(1 − p)
        self.features = nn.Sequential(*layers)
        self.num_features = chans
        self.drop_rate = drop_rate
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)  # inverted: y = x·m/(1 − p) in training, y = x at test
        self.fc = make_linear(chans, num_classes, drop_connect_rate)
        init_weights(self, init, init_std, act)
        set_cfg(self, 32, in_chans, num_classes, "features.0.0")

    def forward_features(self, x):
        return self.features(x)

    def group_matcher(self, coarse: bool = False) -> dict:
        """Stages for ``timm.models.group_modules``: each conv block in order, then the head."""
        return {"blocks": r"^features\.(\d+)"}


@register_model
def convnet(**kwargs) -> ConvNet:
    """Small conv-BN-ReLU network for tiny images (digits 8×8, CIFAR 32×32): trains in a minute on a CPU."""
    return build_model(ConvNet, "convnet", kwargs)
