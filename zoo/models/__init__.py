"""The networks: the from-scratch CNN families (one file per family: convnet, resnet, resnet_cifar, vgg), their
blocks and initialisation, the registry and factory (``create_model``), pretrained timm backbones and the stage
probe's head. A family registers its models when the registry first looks a name up (:mod:`zoo.models.registry`).
"""
