"""Train and eval image transforms: timm's recipe (``transforms_imagenet_train`` / ``_eval``) on uint8 tensors.

- train: crop → flip → colour jitter or an automatic policy → uint8 tensor
- eval:  resize to ⌊size / crop_pct⌋ → centre crop ``size`` → uint8 tensor
- then, per batch on its device: normalise (x / 255 − μ)/σ → random erasing (training) (``ImageDataModule``)

The crop is RandomResizedCrop (``random_resized``: a random area in ``scale`` and aspect in [3/4, 4/3], resized
to ``size``), pad-and-crop (``pad``: zero-cost translation by up to ``padding`` pixels, the CIFAR recipe), or
none (``center``: the eval resize and centre crop). Preprocessing values travel as timm's data config dict
(``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``).

The crops decode JPEGs at reduced size when they shrink them anyway (:mod:`zoo.data.pipeline`); the rest runs
on uint8 tensors with ``transforms.v2``. timm's RandAugment, AutoAugment and AugMix need PIL images: with one
of them (and for eval modes other than a square centre crop) the pipeline is timm's own PIL one, ending in a
uint8 tensor as well. ``normalize`` (the default) appends the normalisation and random erasing to the pipeline;
the data module's loaders ask for ``normalize=False`` and do both per batch, on the batch's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.data import resolve_data_config
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import str_to_interp_mode
from timm.data.transforms_factory import transforms_imagenet_eval, transforms_imagenet_train
from torchvision import transforms
from torchvision.transforms import v2

from zoo.data.decode import as_source
from zoo.data.pipeline import DecodePIL, RandomResizedCropDecode, ResizeDecode

CROPS = ("random_resized", "pad", "center")
# names of automatic augmentation policies -> timm's policy strings (TrivialAugment comes from torchvision)
AUTO_AUGMENT = {
    "randaugment": "rand-m9-mstd0.5-inc1",
    "autoaugment": "original",
    "augmix": "augmix-m5-w3",
    "trivialaugment": "trivialaugment",
}
_TIMM_POLICIES = ("rand", "augmix", "original", "originalr", "v0", "v0r", "3a")


def check_auto_augment(name: str | None) -> str | None:
    """The timm policy string of ``name`` (a short name above, or a timm string such as ``rand-m7-n3``)."""
    if not name:
        return None
    if name in AUTO_AUGMENT:
        return AUTO_AUGMENT[name]
    if name.split("-")[0] in _TIMM_POLICIES:
        return name
    raise ValueError(
        f"unknown auto_augment {name!r}; choose one of {', '.join(AUTO_AUGMENT)}, "
        "or a timm policy string such as 'rand-m9-n2-mstd0.5' or 'augmix-m5-w3'"
    )


def check_crop(crop: str) -> str:
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)}")
    return crop


def merge_data_config(
    base: dict | None,
    in_chans: int = 3,
    image_size: int | Sequence[int] | None = None,
    interpolation: str | None = None,
    crop_pct: float | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict:
    """timm's data config from ``base`` (a backbone's, or a data set's defaults) with the given values on top;
    mean/std of another channel count are averaged to ``in_chans`` channels (RGB statistics for grey images)."""
    base = dict(base or {})
    size = base.get("input_size", (in_chans, 224, 224))[1:]
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    base["mean"], base["std"] = _channels(base.get("mean"), in_chans), _channels(base.get("std"), in_chans)
    args = {"input_size": (in_chans, *size), "interpolation": interpolation, "crop_pct": crop_pct}
    args.update(mean=_channels(mean, in_chans), std=_channels(std, in_chans))
    cfg = resolve_data_config(args=args, pretrained_cfg=base)
    cfg["mean"], cfg["std"] = _channels(cfg["mean"], in_chans), _channels(cfg["std"], in_chans)
    return cfg


def fitted_input_size(size: int, native: float | None, reduction: int = 32) -> int:
    """The input side for images whose shorter side is ``native`` pixels: the backbone's ``size``, or less for
    images so small that ``size`` would upsample them past the point where the network's last feature map (its
    stride, ``reduction``) has a cell for every 2×2 of their pixels: min(size, ⌈(reduction/2)·native⌉ rounded up
    to a multiple of ``reduction``). A larger input adds positions, not detail, and costs ∝ its area (8-pixel
    digits: 128 instead of 224, a third of the work per image)."""
    if not native or native <= 0:
        return size
    wanted = math.ceil(reduction / 2 * native / reduction) * reduction
    return int(min(size, max(reduction, wanted)))


def _channels(values: Sequence[float] | None, n: int) -> tuple[float, ...] | None:
    if values is None or len(values) == n:
        return None if values is None else tuple(values)
    return (sum(values) / len(values),) * n


class Pipeline(v2.Compose):
    """``v2.Compose`` whose first step takes an image file opened but not decoded (``ImageFiles`` passes one)."""

    takes_source = True


def _finish(steps: list, cfg: dict, normalize: bool, re_prob: float = 0.0) -> Pipeline:
    if normalize:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg["mean"]), list(cfg["std"]))]
        if re_prob > 0:
            steps.append(RandomErasing(re_prob, mode="const", device="cpu"))
    return Pipeline(steps)


def _scale_size(cfg: dict) -> tuple[int, int]:
    """timm's eval resize: ⌊size / crop_pct⌋ per side."""
    return tuple(math.floor(s / cfg["crop_pct"]) for s in cfg["input_size"][1:])


def _fast_eval(cfg: dict) -> bool:
    """A square centre crop with a fixed interpolation: the tensor path; other eval modes take timm's PIL one."""
    size = cfg["input_size"][1:]
    return (
        cfg.get("crop_mode", "center") in (None, "center") and size[0] == size[1] and _interp(cfg) is not None
    )


def _interp(cfg: dict):
    return None if cfg["interpolation"] == "random" else str_to_interp_mode(cfg["interpolation"])


def _timm_eval(cfg: dict) -> transforms.Compose:
    """timm's PIL eval transform, ending in a uint8 tensor."""
    return transforms_imagenet_eval(
        img_size=tuple(cfg["input_size"][1:]),
        crop_pct=cfg["crop_pct"],
        crop_mode=cfg["crop_mode"],
        interpolation=cfg["interpolation"],
        use_prefetcher=True,
    )


def _eval_steps(cfg: dict) -> list:
    if _fast_eval(cfg):
        return [ResizeDecode(_scale_size(cfg)[0], cfg["input_size"][1:], _interp(cfg))]
    return [DecodePIL(), *_timm_eval(cfg).transforms]


def eval_transform(cfg: dict, normalize: bool = True) -> Pipeline:
    """Resize the short side to ⌊size / crop_pct⌋, centre crop, to a uint8 tensor; then (x / 255 − μ)/σ
    when ``normalize`` (the data module's loaders leave it out and normalise whole batches on their device)."""
    return _finish(_eval_steps(cfg), cfg, normalize)


# test-time views (zoo.training.tta): the five crops are taken from the image resized to ⌊size / c⌋, c ≤ FIVE_CROP_PCT
# (the classic 224 of 256), so there is room to crop even when the eval crop_pct is 1; the multi-scale set is the
# centre crop after resizing to ⌊size / c⌋ for each c in SCALE_CROP_PCTS (the whole image, timm's 0.875, closer)
FIVE_CROP_PCT = 0.875
SCALE_CROP_PCTS = (1.0, 0.875, 0.75)
VIEW_COUNTS = {"crops": 5, "scales": len(SCALE_CROP_PCTS)}  # views per image


def view_transform(cfg: dict, views: str) -> Pipeline:
    """Several eval views of one image, stacked as a uint8 V×C×H×W tensor (``size`` = ``cfg["input_size"]``):

    - ``crops``: torchvision's ``FiveCrop`` (four corners, then the centre) of the image resized to
      ⌊size / c⌋, c = min(crop_pct, 0.875); with crop_pct ≤ 0.875 the centre view is the eval crop itself.
    - ``scales``: the eval resize and centre crop at crop_pct 1, 0.875 and 0.75 (one image, three zooms).

    The views are averaged by the model (:func:`zoo.training.tta.view_scores`), after the batch is normalised."""
    if views not in VIEW_COUNTS:
        raise ValueError(f"unknown views {views!r}; choose one of {', '.join(VIEW_COUNTS)}")
    size = tuple(cfg["input_size"][1:])
    interp = _interp(cfg) or transforms.InterpolationMode.BILINEAR
    if views == "crops":
        resize = _view_resize(cfg, min(cfg["crop_pct"], FIVE_CROP_PCT))
        return Pipeline([ResizeDecode(resize, None, interp), v2.FiveCrop(size), torch.stack])
    zooms = [
        v2.Compose([v2.Resize(_view_resize(cfg, c), interp), v2.CenterCrop(size)]) for c in SCALE_CROP_PCTS
    ]
    return Pipeline([DecodeTensor(), Views(zooms)])


def _view_resize(cfg: dict, crop_pct: float) -> int | tuple[int, int]:
    """The eval resize at ``crop_pct``: the short side ⌊size / crop_pct⌋ for a square input, else both sides."""
    scaled = _scale_size({**cfg, "crop_pct": crop_pct})
    return scaled[0] if scaled[0] == scaled[1] else scaled


class DecodeTensor:
    """The decoded image as a uint8 C×H×W tensor, in full (the views below resize it several ways)."""

    takes_source = True

    def __call__(self, x) -> torch.Tensor:
        return as_source(x).tensor()


class Views:
    """Each transform of ``transforms`` applied to the same image, the results stacked (V×C×H×W). torchvision has
    the five and ten crops but no "same image, several pipelines" step, hence this one."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return torch.stack([t(img) for t in self.transforms])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


def train_transform(
    cfg: dict,
    crop: str = "random_resized",
    scale: Sequence[float] = (0.08, 1.0),
    padding: int = 4,
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    auto_augment: str | None = None,
    re_prob: float = 0.0,
    normalize: bool = True,
) -> Pipeline:
    """The training pipeline of the module docstring, to a uint8 tensor; with ``normalize``, on to
    (x / 255 − μ)/σ and random erasing with probability ``re_prob`` (the data module's loaders leave both out
    and apply them to whole batches on their device)."""
    size = tuple(cfg["input_size"][1:])
    policy = check_auto_augment(auto_augment)
    check_crop(crop)
    if policy and policy != "trivialaugment" and cfg["input_size"][0] != 3:
        raise ValueError(
            f"auto_augment {auto_augment!r} (a timm policy) needs RGB images; with "
            f"{cfg['input_size'][0]}-channel images use 'trivialaugment' or colour jitter"
        )
    interp = _interp(cfg)
    if (policy and policy != "trivialaugment") or interp is None:
        return _finish(
            _timm_pil_steps(cfg, crop, scale, padding, hflip, color_jitter, policy), cfg, normalize, re_prob
        )
    if crop == "random_resized":
        steps = [RandomResizedCropDecode(size, scale, interpolation=interp)]
    elif crop == "pad":
        steps = [
            ResizeDecode(size, None, interp),
            v2.RandomCrop(size, padding=padding, padding_mode="reflect"),
        ]
    else:  # the eval resize and centre crop
        steps = _eval_steps(cfg)
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(hflip))
    if policy == "trivialaugment":  # its rotations and shears take nearest or bilinear on tensors
        nearest = interp == transforms.InterpolationMode.NEAREST
        steps.append(
            v2.TrivialAugmentWide(interpolation=interp if nearest else v2.InterpolationMode.BILINEAR)
        )
    elif color_jitter:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return _finish(steps, cfg, normalize, re_prob)


def _timm_pil_steps(cfg, crop, scale, padding, hflip, color_jitter, policy) -> list:
    """timm's PIL pipeline (for its augmentation policies), from the decoded image to a uint8 tensor."""
    size = tuple(cfg["input_size"][1:])
    primary, secondary, final = transforms_imagenet_train(
        img_size=size,
        scale=tuple(scale),
        hflip=hflip,
        color_jitter=None if policy else color_jitter or None,  # a policy replaces colour jitter
        auto_augment=policy,
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
        use_prefetcher=True,  # ends in a uint8 tensor: normalisation and erasing come later
        separate=True,
    )
    steps = list(primary.transforms)
    interp = str_to_interp_mode(cfg["interpolation"] if cfg["interpolation"] != "random" else "bilinear")
    if crop == "pad":
        steps[0:1] = [
            transforms.Resize(size, interpolation=interp),
            transforms.RandomCrop(size, padding=padding, padding_mode="reflect"),
        ]
    elif crop == "center":
        steps[0:1] = _timm_eval(cfg).transforms[:-1]
    return [DecodePIL(), *steps, *secondary.transforms, *final.transforms]
