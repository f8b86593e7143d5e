"""A small VGG-style CNN for tiny images (8×8 digits, 32×32 CIFAR): conv-norm-act stages, max-pooling,
dropout before the classifier."""

from __future__ import annotations

from torch import nn

from zoo.blocks import ConvNormAct
from zoo.registry import register_model


class ConvNet(nn.Module):
    """Stages of ``depth`` 3×3 ConvNormAct blocks, each stage followed by 2×2 stride-2 max-pooling
    (W → W/2); then global average pooling, dropout (inverted, rate ``drop_rate``) and a linear classifier."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64),
        depth: int = 2,
        norm: str = "batch",
        act: str = "relu",
        drop_rate: float = 0.25,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        chans = in_chans
        for width in widths:
            for _ in range(depth):
                layers.append(ConvNormAct(chans, width, 3, norm=norm, act=act))
                chans = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.num_features = chans
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(chans, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, x):
        return self.fc(self.drop(self.pool(x).flatten(1)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@register_model
def convnet(num_classes: int = 10, in_chans: int = 3, **kwargs) -> ConvNet:
    """Small conv-BN-ReLU network for tiny images (digits 8×8, CIFAR 32×32)."""
    return ConvNet(num_classes=num_classes, in_chans=in_chans, **kwargs)
