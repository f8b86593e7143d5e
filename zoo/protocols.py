"""What the fine-tuning callbacks and the CLI ask of a model and of a data module, as ``Protocol`` classes.

``ImageClassifier`` is a :class:`FineTunable`, :class:`Guarded` and :class:`Optimized`; the image data modules (``zoo.data.ImageDataModule`` and its
subclasses) are :class:`FeatureData`, :class:`SplitDatasets`, :class:`Batched`, :class:`ModelPreprocessing` and
:class:`EvalViews`, and every data module that names its classes is a :class:`ClassNames`. A callback checks ``isinstance(x, FeatureData)`` once instead of probing
attributes one by one, and a module or data module of a user's own takes part by providing these methods.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@runtime_checkable
class ClassNames(Protocol):
    """A data module that names its classes: ``class_names[k]`` is label k's name (what prediction CSVs and exports
    write in place of the number)."""

    class_names: list[str]


@runtime_checkable
class SplitDatasets(Protocol):
    """A data module that keeps each split it has set up as a dataset in ``splits`` (``train``, ``val``, ``test``);
    an image data module's datasets read their images through the ``transform`` it sets before each loader."""

    splits: dict[str, Dataset]


@runtime_checkable
class ImageList(Protocol):
    """A dataset that lists its image files: ``samples[i]`` is image i's ``(path, label)``."""

    samples: list[tuple[str, int]]


@runtime_checkable
class Batched(Protocol):
    """A data module that loads ``batch_size`` images per device and step (0: the whole training split)."""

    batch_size: int


@runtime_checkable
class ModelPreprocessing(Protocol):
    """A data module that takes its preprocessing from the model: :meth:`set_model_config` is handed the model's
    pretrained data config (mean, std, input size) before the run; ``config`` is the preprocessing in use."""

    config: dict | None

    def set_model_config(self, config: dict | None) -> None:
        """Preprocess as ``config`` says (None: the data module's own)."""


@runtime_checkable
class EvalViews(Protocol):
    """A data module whose test and predict loaders can show several views of each image (``--tta crops`` or
    ``scales``): ``eval_views`` is the kind in use, None for one view."""

    eval_views: str | None


@runtime_checkable
class SplitData(Protocol):
    """A data module that says which splits it has and what the training labels are."""

    class_names: list[str]

    def has_split(self, name: str) -> bool:
        """Whether the split ``name`` (``train``, ``val``, ``test``) holds images."""

    def split_targets(self, name: str) -> list[int]:
        """The labels of the split ``name``, in order."""


@runtime_checkable
class FeatureData(SplitData, Protocol):
    """A :class:`SplitData` that can hand every image of a split over once, in order: what a features-once
    method (the linear probe) runs the backbone over."""

    def feature_dataloader(self, split: str, **options) -> DataLoader:
        """``(x, y)`` batches of ``split``, this process's share in order; ``options``: ``augment`` (the training
        transform), ``rank`` and ``world_size`` (the share), ``indices`` (those images of the split only).
        ``loader.dataset.indices`` are the images' positions in the split."""


@runtime_checkable
class Guarded(Protocol):
    """A LightningModule whose non-finite guard (``zoo.training.guard.NonFiniteGuard``) skips steps with a NaN or inf loss
    and stops training after ``guard.max_in_row`` of them in a row."""

    guard: object


@runtime_checkable
class Optimized(Protocol):
    """A LightningModule that builds its optimizer from ``optimizer_config`` (``zoo.training.optim.OptimizerConfig``)."""

    optimizer_config: object


@runtime_checkable
class FineTunable(Protocol):
    """A LightningModule with a pretrained backbone in stages and a head: what fine-tuning reaches."""

    num_classes: int

    @property
    def has_pretrained_weights(self) -> bool:
        """Whether the backbone started from pretrained weights."""

    @property
    def backbone_lr_scale(self) -> float:
        """lr of the backbone as a fraction of the head's."""

    def classifier(self) -> nn.Module:
        """The head: a linear layer whose input is the backbone's features."""

    def backbone_stages(self) -> list[tuple[str, nn.Module]]:
        """The backbone's stages top-down (the deepest first), the head left out."""

    def stage_taps(self) -> list[str]:
        """Stages below the top whose pooled outputs a probe may read too (deepest first); [] for none."""

    def probe_features(self, x: torch.Tensor, blocks: list[str]) -> list[torch.Tensor]:
        """The pooled feature ``blocks`` (``top``: the head's input; or names from :meth:`stage_taps`) of ``x``."""

    def load_probe(self, fit) -> None:
        """Load a fitted probe (``zoo.training.probe.ProbeFit``) into the head."""

    def use_stages(self, stages: list[str], fit) -> None:
        """Make the head read the pooled ``stages`` side by side, with the probe ``fit``'s weights."""

    def can_add_param_groups(self) -> bool:
        """Whether param groups may join the optimizer mid-run."""

    def new_param_groups(self, name: str, params: list[nn.Parameter], lr: float) -> list[dict]:
        """Optimizer groups for ``params`` joining as ``name``."""
