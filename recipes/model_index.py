"""The zoo's model names and one-line descriptions, so ``zoo models`` lists them without importing torch.

The zoo's models are registered when their files are imported, which needs torch (seconds); this copy of the
registry's names and first docstring lines answers at once. ``python -m recipes.model_index`` rewrites it from
``zoo.models.registry``; a test fails when the two differ.
"""

from __future__ import annotations

import json
from pathlib import Path

MODELS = {
    # BEGIN: written by `python -m recipes.model_index`
    "convnet": "Small conv-BN-ReLU network for tiny images (digits 8×8, CIFAR 32×32): trains in a minute on a CPU.",
    "resnet18": "ImageNet ResNet-18, basic blocks (2, 2, 2, 2): a fast 224×224 baseline.",
    "resnet20": "CIFAR ResNet-20 (n = 3) for 32×32 images: the small baseline of He et al.'s CIFAR-10 table.",
    "resnet32": "CIFAR ResNet-32 (n = 5) for 32×32 images.",
    "resnet34": "ImageNet ResNet-34, basic blocks (3, 4, 6, 3).",
    "resnet50": "ImageNet ResNet-50, bottlenecks (3, 4, 6, 3): the standard benchmark.",
    "resnet56": "CIFAR ResNet-56 (n = 9) for 32×32 images.",
    "resnet101": "ImageNet ResNet-101, bottlenecks (3, 4, 23, 3): large data.",
    "resnet110": "CIFAR ResNet-110 (n = 18) for 32×32 images: the stochastic-depth and snapshot-ensemble network.",
    "resnet152": "ImageNet ResNet-152, bottlenecks (3, 8, 36, 3): large data.",
    "vgg11": "VGG-11 (configuration A): plain 3×3 conv stack for 224×224; most weights in its fc layers.",
    "vgg11_bn": "VGG-11 with BatchNorm after every conv: trains from scratch without careful init.",
    "vgg13": "VGG-13 (configuration B): plain 3×3 conv stack for 224×224; most weights in its fc layers.",
    "vgg13_bn": "VGG-13 with BatchNorm after every conv: trains from scratch without careful init.",
    "vgg16": "VGG-16 (configuration D): plain 3×3 conv stack for 224×224; most weights in its fc layers.",
    "vgg16_bn": "VGG-16 with BatchNorm after every conv: trains from scratch without careful init.",
    "vgg19": "VGG-19 (configuration E): plain 3×3 conv stack for 224×224; most weights in its fc layers.",
    "vgg19_bn": "VGG-19 with BatchNorm after every conv: trains from scratch without careful init.",
    # END
}


def current() -> dict[str, str]:
    """``{name: description}`` from the registry itself (imports every model family, and torch)."""
    from zoo.models.registry import list_models, model_description

    return {name: model_description(name) for name in list_models()}


def write(path: Path = Path(__file__)) -> None:
    text = path.read_text()
    head, rest = text.split("    # BEGIN", 1)
    _, tail = rest.split("    # END\n", 1)
    quote = lambda s: json.dumps(s, ensure_ascii=False)  # noqa: E731 - the quotes `ruff format` keeps
    body = "".join(f"    {quote(name)}: {quote(doc)},\n" for name, doc in current().items())
    path.write_text(f"{head}    # BEGIN: written by `python -m recipes.model_index`\n{body}    # END\n{tail}")


if __name__ == "__main__":
    write()
