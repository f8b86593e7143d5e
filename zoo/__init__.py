"""lightning-zoo: CNN families, timm backbones and one LightningModule to train them.

The package imports nothing heavy by itself: ``zoo.ImageClassifier`` and ``zoo.create_model`` load torch,
Lightning and timm when first used, so the ``zoo`` command answers ``zoo --help`` at once.
"""

from zoo import compat

compat.hide_wandb_while_timm_imports()  # before anything imports timm: keeps wandb out of runs that do not use it

__all__ = ["ImageClassifier", "create_model", "list_models", "register_model"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "ImageClassifier":
        from zoo.training.module import ImageClassifier

        return ImageClassifier
    if name in ("create_model", "list_models", "register_model"):
        from zoo.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
