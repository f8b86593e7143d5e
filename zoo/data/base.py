"""``ImageDataModule``: what the image data modules share: preprocessing, augmentation, class counts, loaders.

A subclass lists the images of each split (``make_splits``) and of ``predict`` (``make_predict_set``); this
class decides the preprocessing when the loaders are built. ``preprocess: auto`` takes a pretrained backbone's
configuration (size, interpolation, crop, mean, std), handed over by whoever builds the model and the data
(``set_model_config(model.pretrained_data_config())``: the zoo's CLI does it once both exist; the data module
never reads the model), and for a model trained from scratch the ``fallback`` statistics: the training
split's own per-channel mean and std (``dataset``) or ImageNet's (``imagenet``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.data.random_erasing import RandomErasing
from torch.utils.data import DataLoader, Dataset, Subset

from zoo.data.files import collate_present
from zoo.data.loader import eval_loader, train_loader
from zoo.data.pipeline import normalize
from zoo.data.stats import channel_stats
from zoo.data.transforms import (
    VIEW_COUNTS,
    check_auto_augment,
    check_crop,
    eval_transform,
    fitted_input_size,
    merge_data_config,
    train_transform,
    view_transform,
)
from zoo.protocols import ImageList
from zoo.runtime.console import print_table

PREPROCESS = ("auto", "model", "dataset", "imagenet", "none")
MAX_ROWS = 20  # classes shown in the table of class counts
FALLBACKS = ("dataset", "imagenet")
DEFAULT_BATCH_SIZE = 32


class MissingSplitError(KeyError):
    """A split the data does not have (``zoo test`` on data without a test split)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _check(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


class ImageDataModule(LightningDataModule):
    """Base of the image data modules (folder, ImageNet, CIFAR). Subclasses set ``class_names``.

    Args:
        batch_size: images per device and step (None: 32, or what fine-tuning's budget picks for the data).
        num_workers: data-loader processes (0: load in the training process).
        persistent_workers: keep the loader processes between epochs (with ``num_workers`` > 0).
        pin_memory: copy batches to page-locked memory for faster transfers to a CUDA device; None: when the
            trainer uses one. Never on other devices.
        preprocess: ``auto`` (pretrained backbone's config, else ``fallback``), ``model`` (the backbone's,
            an error without one), ``dataset`` (training-split mean/std), ``imagenet`` or ``none`` (0 and 1).
        fallback: statistics of ``auto`` for a model without pretrained weights: ``dataset`` or ``imagenet``.
        image_size: input size (int or [H, W]); None: the backbone's (less for images far smaller than it:
            :func:`~zoo.data.transforms.fitted_input_size`), else the data set's default.
        mean: per-channel mean; given, it overrides every source. Likewise ``std``.
        std: per-channel standard deviation.
        interpolation: resize interpolation (``bilinear``, ``bicubic``, ...); None: the backbone's.
        crop_pct: eval centre crop = size, after resizing to size / crop_pct; None: the backbone's.
        crop: training crop: ``random_resized``, ``pad`` (pad by ``padding`` and crop) or ``center``.
        scale: area range of the random resized crop.
        padding: pixels of the pad-and-crop.
        hflip: probability of a horizontal flip.
        color_jitter: strength of brightness, contrast and saturation jitter (0: off).
        auto_augment: ``randaugment``, ``trivialaugment``, ``autoaugment``, ``augmix`` or a timm policy string.
        re_prob: probability of random erasing.
        balance: draw training images with probability ∝ 1 / (images of their class).
        imbalance_ratio: warn when the largest class has this many times the images of the smallest.
        stats_images: training images that estimate the ``dataset`` statistics (0: all).
        flip_invariant: whether a mirrored image keeps its class (false for text, digits, left/right classes);
            ``zoo test|predict --tta flip`` is refused when it is false. ``hflip`` is only the training
            augmentation's probability.
    """

    num_channels: int = 3
    class_names: list[str]
    eval_views: str | None = (
        None  # test and predict views: None, "crops" or "scales" (set by --tta, zoo.training.tta)
    )

    def __init__(
        self,
        batch_size: int | None = None,
        num_workers: int = 4,
        preprocess: str = "auto",
        fallback: str = "dataset",
        image_size: int | list[int] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        interpolation: str | None = None,
        crop_pct: float | None = None,
        crop: str = "random_resized",
        scale: tuple[float, float] = (0.08, 1.0),
        padding: int = 4,
        hflip: float = 0.5,
        color_jitter: float = 0.0,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        balance: bool = False,
        imbalance_ratio: float = 5.0,
        stats_images: int = 2000,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
        flip_invariant: bool = True,
    ):
        super().__init__()
        _check("preprocess", preprocess, PREPROCESS)
        _check("fallback", fallback, FALLBACKS)
        check_crop(crop)
        check_auto_augment(auto_augment)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be ≥ 1 (images per device and step)")
        self.save_hyperparameters()
        self.batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        self.splits: dict[str, Dataset] = {}
        self.stats: dict | None = None  # {"mean": [...], "std": [...]} of the training split
        self.trained_config: dict | None = None  # the preprocessing a loaded checkpoint was trained with
        self.model_config: dict | None = None  # a pretrained backbone's preprocessing (set_model_config)
        self.config: dict | None = None  # the preprocessing in use
        self._native: float | None = None  # the training images' median shorter side (native_size)
        self._shown: dict | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # --- what subclasses provide -------------------------------------------------------------------
    def make_splits(self) -> dict[str, Dataset]:
        """``{"train": ..., "val": ..., "test": ...}``: datasets with ``targets`` and a settable ``transform``."""
        raise NotImplementedError

    def make_predict_set(self) -> Dataset:
        """A dataset of ``(image, id)`` with a settable ``transform`` (None items are left out)."""
        raise NotImplementedError

    def default_config(self) -> dict:
        """The data set's own preprocessing defaults (timm data-config keys) for models without one."""
        return {}

    def setup(self, stage: str | None = None) -> None:
        """List the splits once (not for ``predict``, which lists its own images) and print class counts."""
        if not self.splits and stage != "predict":
            self.splits = self.make_splits()
            self.report_classes()

    # --- preprocessing ----------------------------------------------------------------------------
    def set_model_config(self, config: dict | None) -> None:
        """Hand over the model's pretrained preprocessing (timm data-config keys), what ``preprocess: auto`` and
        ``model`` use: ``ImageClassifier.pretrained_data_config()``, None for a model trained from scratch.
        Whoever builds the model and the data calls it (the zoo's CLI does); the data module never reads the
        model."""
        self.model_config = None if config is None else dict(config)

    def preprocess_config(self) -> dict:
        """timm's data config in use now: ``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``.

        validate / test / predict with a checkpoint use the preprocessing the checkpoint was trained with.
        """
        fn = self.trainer.state.fn if self.trainer is not None else None
        if self.trained_config is not None and fn is not None and fn != "fit":
            self.config = dict(self.trained_config)
            self._show(self.config, "checkpoint")
            return self.config
        hp = self.hparams
        source, model_cfg = hp.preprocess, None
        if source in ("auto", "model"):
            model_cfg = self.model_config
            if model_cfg is None and source == "model":
                raise ValueError(
                    "preprocess='model' needs a model with pretrained weights (e.g. --model.arch timm/NAME "
                    "--model.pretrained true; in Python, hand its preprocessing over with "
                    "data.set_model_config(model.pretrained_data_config())); use preprocess 'auto', 'dataset' "
                    "or 'imagenet' otherwise"
                )
            source = "model" if model_cfg else hp.fallback
        c = self.num_channels
        base = model_cfg or self.default_config()
        cfg = merge_data_config(base, c, hp.image_size, hp.interpolation, hp.crop_pct)
        note = ""
        if source == "model" and hp.image_size is None:  # a backbone's size, fitted to images much smaller
            side, native = cfg["input_size"][-1], self.native_size()
            fitted = fitted_input_size(side, native, int(model_cfg.get("reduction") or 32))
            if fitted < min(cfg["input_size"][1:]):
                cfg = merge_data_config(cfg, c, fitted)
                note = (
                    f" (the backbone's {side} fitted to images of {native:g} px; --data.image_size sets it)"
                )
        if source == "imagenet":
            cfg = merge_data_config(cfg, c, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
        elif source == "none":
            cfg = merge_data_config(cfg, c, mean=(0.0,) * c, std=(1.0,) * c)
        elif source == "dataset" and (hp.mean is None or hp.std is None):
            mean, std = self.dataset_stats(cfg)
            cfg = merge_data_config(cfg, c, mean=mean, std=std)
        if hp.mean is not None or hp.std is not None:
            cfg = merge_data_config(cfg, c, mean=hp.mean, std=hp.std)
        self._show(cfg, source, note)
        self.config = cfg
        return cfg

    def native_size(self, limit: int = 500) -> float | None:
        """The median shorter side, in pixels, of up to ``limit`` training images (their headers only), or None
        when the training split lists no image files."""
        if self._native is None:
            self.setup("fit")
            train = self.splits.get("train")
            samples = train.samples if isinstance(train, ImageList) else None
            if not samples:
                return None
            sides = []
            for path, _ in samples[:: max(1, len(samples) // limit)]:
                with contextlib.suppress(OSError), Image.open(path) as img:
                    sides.append(min(img.size))
            self._native = float(np.median(sides)) if sides else 0.0
        return self._native or None

    def dataset_stats(self, cfg: dict) -> tuple[list[float], list[float]]:
        """Per-channel mean/std of the training split at the eval size, computed once (kept in checkpoints)."""
        if self.stats is None:
            self.setup("fit")
            train = copy.copy(self.splits["train"])  # the same images, through the eval resize and crop only
            train.transform = eval_transform(cfg, normalize=False)  # uint8: channel_stats scales it to [0, 1]
            hp = self.hparams
            mean, std = channel_stats(
                train, hp.stats_images, batch_size=self.batch_size, num_workers=hp.num_workers
            )
            if min(std) <= 0:
                raise ValueError(f"the training images have a constant channel (std {std}); give --data.std")
            self.stats = {"mean": mean, "std": std}
        return self.stats["mean"], self.stats["std"]

    @rank_zero_only
    def _show(self, cfg: dict, source: str, note: str = "") -> None:
        if cfg != self._shown:
            self._shown = cfg
            fmt = ", ".join(f"{v:.4f}" for v in cfg["mean"]), ", ".join(f"{v:.4f}" for v in cfg["std"])
            size = "×".join(str(s) for s in cfg["input_size"])
            print(
                f"Preprocessing ({source}): input {size}{note}, {cfg['interpolation']}, crop_pct {cfg['crop_pct']}, "
                f"mean ({fmt[0]}), std ({fmt[1]})"
            )

    def transforms(self) -> tuple:
        """(train transform, eval transform) for the current preprocessing, both ending in uint8 tensors.

        Normalising in the workers instead would send float32 batches, 4× the bytes, through shared memory:
        measured, that costs more than the whole normalisation in the training process (benchmarks/pipeline.py)."""
        hp, cfg = self.hparams, self.preprocess_config()
        train = train_transform(
            cfg, hp.crop, hp.scale, hp.padding, hp.hflip, hp.color_jitter, hp.auto_augment, hp.re_prob, False
        )
        return train, eval_transform(cfg, normalize=False)  # uint8: on_after_batch_transfer normalises

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """A uint8 batch, now on its device: (x / 255 − μ)/σ there, then random erasing while training."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
            return batch
        cfg = self.config if self.config is not None else self.preprocess_config()
        x = normalize(x, cfg["mean"], cfg["std"])
        trainer = self.trainer
        if self.hparams.re_prob > 0 and trainer is not None and trainer.training and len(x):
            x = RandomErasing(self.hparams.re_prob, mode="const", device=x.device)(x)
        return [x, *batch[1:]] if isinstance(batch, (list, tuple)) else x

    # --- class counts ------------------------------------------------------------------------------
    def report_classes(self) -> None:
        """Print images per class and split; warn when the training split is strongly imbalanced."""
        counts = {
            name: torch.bincount(torch.tensor(ds.targets), minlength=self.num_classes).tolist()
            for name, ds in self.splits.items()
        }
        _print_counts(self.class_names, counts)
        train = counts.get("train")
        if train and min(train) > 0 and max(train) / min(train) >= self.hparams.imbalance_ratio:
            big, small = train.index(max(train)), train.index(min(train))
            rank_zero_warn(
                f"class imbalance in the training split: {self.class_names[big]!r} has {max(train)} images, "
                f"{self.class_names[small]!r} {min(train)} (ratio {max(train) / min(train):.1f} >= "
                f"imbalance_ratio {self.hparams.imbalance_ratio}). Accuracy can hide poor results on the rare "
                "classes: add images of them or set --data.balance true (class-balanced sampling)."
            )

    # --- loaders ----------------------------------------------------------------------------------
    def loader_options(self) -> dict:
        """``num_workers``, ``persistent_workers`` and ``pin_memory`` of the loaders; memory is pinned only for a
        CUDA device the trainer uses (pinning for a CPU run costs a copy and gains nothing)."""
        hp = self.hparams
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        cuda = device.type == "cuda"
        return {
            "num_workers": hp.num_workers,
            "persistent_workers": hp.persistent_workers and hp.num_workers > 0,
            "pin_memory": cuda and hp.pin_memory is not False,
        }

    def _loader(self, dataset: Dataset, train: bool = False, collate=None) -> DataLoader:
        """Training: a loader that resumes exactly mid-epoch (:mod:`zoo.data.loader`); else one in order."""
        hp, opts = self.hparams, self.loader_options()
        if not train:
            return eval_loader(dataset, self.batch_size, collate_fn=collate, **opts)
        weights = None
        if hp.balance:
            targets = torch.tensor(dataset.targets)
            counts = torch.bincount(targets, minlength=self.num_classes).clamp_min(1)
            weights = (1.0 / counts)[targets].double()  # P(i) ∝ 1 / (images of i's class)
        return train_loader(
            dataset,
            self.batch_size,
            trainer=self.trainer,
            weights=weights,
            drop_last=len(dataset) >= self.batch_size,
            collate_fn=collate,
            **opts,
        )

    def _split(self, name: str) -> Dataset:
        self.setup(name)
        if name not in self.splits:
            raise MissingSplitError(
                f"this data has no {name} split; add a {name}/ folder next to train/ or set "
                f"--data.{name}_fraction (e.g. 0.1) to hold one out"
            )
        return self.splits[name]

    def train_dataloader(self):
        train, _ = self.transforms()
        ds = self._split("train")
        ds.transform = train
        return self._loader(ds, train=True)

    def _eval_loader(self, name: str, views: str | None = None) -> DataLoader:
        """The split ``name`` in order through the eval transform, or through ``views`` (:func:`view_transform`)."""
        _, evaluate = self.transforms()
        ds = self._split(name)
        ds.transform = evaluate if views is None else view_transform(self.config, views)
        return self._loader(ds)

    def val_dataloader(self):
        fitting = self.trainer is not None and self.trainer.state.fn == "fit"
        if fitting and not self.has_split("val"):
            return []  # trained on every image (too few to hold out): no validation, said at set-up
        return self._eval_loader("val")

    def has_split(self, name: str) -> bool:
        """Whether the data has the split ``name`` (``train``, ``val``, ``test``)."""
        self.setup(name)
        return name in self.splits

    def split_targets(self, name: str) -> list[int]:
        """The labels of the split ``name``, in order (fine-tuning counts images per class from them)."""
        return list(self._split(name).targets)

    def feature_dataloader(
        self,
        split: str,
        augment: bool = False,
        rank: int = 0,
        world_size: int = 1,
        indices: Sequence[int] | None = None,
    ) -> DataLoader:
        """Every image of ``split`` (or those at ``indices``) once, in order, through the eval transform (the
        training one when ``augment``): what a features-once method (the linear probe) runs the backbone over.

        With ``world_size`` processes each takes every ``world_size``-th image from ``rank`` (no padding, no
        duplicates); ``loader.dataset.indices`` are the images' positions in the split."""
        train, evaluate = self.transforms()
        ds = copy.copy(self._split(split))  # the same images; the live split keeps its own transform
        ds.transform = train if augment else evaluate
        positions = list(range(len(ds))) if indices is None else [int(i) for i in indices]
        shard = Subset(ds, positions[rank::world_size])
        return eval_loader(shard, self.batch_size, **self.loader_options())

    def test_dataloader(self):
        return self._eval_loader("test", self.eval_views)

    def predict_dataloader(self):
        _, evaluate = self.transforms()
        ds = self.make_predict_set()
        views = self.eval_views
        ds.transform = evaluate if views is None else view_transform(self.config, views)
        shape = (self.num_channels, *self.config["input_size"][1:])
        if views is not None:  # an empty batch (no readable image) has the views' shape too
            shape = (VIEW_COUNTS[views], *shape)
        return self._loader(ds, collate=functools.partial(collate_present, shape=shape))

    # --- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        config = (
            None
            if self.config is None
            else {k: list(v) if isinstance(v, tuple) else v for k, v in self.config.items()}
        )
        return {"class_names": list(self.class_names), "stats": self.stats, "config": config}

    def load_state_dict(self, state: dict) -> None:
        names = state.get("class_names")
        if names is not None and list(names) != list(self.class_names):
            raise ValueError(
                f"the checkpoint was trained on the classes {names}, but the data has {self.class_names}; "
                "predict with the data the model was trained on (or give --data.class_names)"
            )
        self.stats = state.get("stats") or self.stats
        self.trained_config = state.get("config")


@rank_zero_only
def _print_counts(names: list[str], counts: dict[str, list[int]]) -> None:
    order = list(range(len(names)))
    if len(names) > MAX_ROWS:  # the rarest and the most common training classes
        order = sorted(order, key=lambda i: next(iter(counts.values()))[i])
        order = order[: MAX_ROWS // 2] + [-1] + order[-MAX_ROWS // 2 :]
    rows = [
        [f"... {len(names) - MAX_ROWS} more", *("" for _ in counts)]
        if i < 0
        else [names[i], *(c[i] for c in counts.values())]
        for i in order
    ]
    rows.append(["total", *(sum(c) for c in counts.values())])
    title = f"Images per class ({len(names)} classes)"
    print_table(title, ["class", *counts], rows, right=list(counts), bold=[len(rows) - 1], width=120)
