"""From-scratch CNN families, one file per family; importing this package registers them all."""

from zoo.models import convnet, resnet, resnet_cifar, vgg  # noqa: F401
