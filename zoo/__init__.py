"""lightning-zoo: CNN families, timm backbones and one LightningModule to train them."""

from zoo import _timm_import  # noqa: F401  (first: keeps wandb out of runs that do not use it)
from zoo.module import ImageClassifier
from zoo.registry import create_model, list_models, register_model

__all__ = ["ImageClassifier", "create_model", "list_models", "register_model"]
__version__ = "0.1.0"
