"""Train and eval image transforms, built by timm (``transforms_imagenet_train`` / ``transforms_imagenet_eval``).

- train: crop → flip → colour jitter or an automatic policy → tensor → normalise (x − μ)/σ → random erasing
- eval:  resize to ⌊size / crop_pct⌋ → centre crop ``size`` → tensor → normalise (x − μ)/σ

The crop is RandomResizedCrop (``random_resized``: a random area in ``scale`` and aspect in [3/4, 4/3], resized
to ``size``), pad-and-crop (``pad``: zero-cost translation by up to ``padding`` pixels, the CIFAR recipe), or
none (``center``: the eval resize and centre crop). Preprocessing values travel as timm's data config dict
(``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from timm.data import resolve_data_config
from timm.data.transforms import str_to_interp_mode
from timm.data.transforms_factory import transforms_imagenet_eval, transforms_imagenet_train
from torchvision import transforms

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


def data_config(
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


def _channels(values: Sequence[float] | None, n: int) -> tuple[float, ...] | None:
    if values is None or len(values) == n:
        return None if values is None else tuple(values)
    return (sum(values) / len(values),) * n


def eval_transform(cfg: dict, normalize: bool | None = True) -> Callable:
    """Resize the short side to ⌊size / crop_pct⌋, centre crop, to tensor in [0, 1], then (x − μ)/σ when
    ``normalize`` (None: a uint8 tensor)."""
    channels = cfg["input_size"][0]
    return transforms_imagenet_eval(
        img_size=tuple(cfg["input_size"][1:]),
        crop_pct=cfg["crop_pct"],
        crop_mode=cfg["crop_mode"],
        interpolation=cfg["interpolation"],
        mean=cfg["mean"] if normalize else (0.0,) * channels,
        std=cfg["std"] if normalize else (1.0,) * channels,
        normalize=normalize is not None,
    )


def train_transform(
    cfg: dict,
    crop: str = "random_resized",
    scale: Sequence[float] = (0.08, 1.0),
    padding: int = 4,
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    auto_augment: str | None = None,
    re_prob: float = 0.0,
) -> Callable:
    """The training pipeline of the module docstring; timm builds it, torchvision supplies pad-and-crop,
    the centre crop without augmentation and TrivialAugment, which timm does not have."""
    size = tuple(cfg["input_size"][1:])
    policy = check_auto_augment(auto_augment)
    if policy and policy != "trivialaugment" and cfg["input_size"][0] != 3:
        raise ValueError(
            f"auto_augment {auto_augment!r} (a timm policy) needs RGB images; with "
            f"{cfg['input_size'][0]}-channel images use 'trivialaugment' or colour jitter"
        )
    primary, secondary, final = transforms_imagenet_train(
        img_size=size,
        scale=tuple(scale),
        hflip=hflip,
        color_jitter=None if policy else color_jitter or None,  # a policy replaces colour jitter
        auto_augment=None if policy == "trivialaugment" else policy,
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
        re_prob=re_prob,
        separate=True,
    )
    steps = list(primary.transforms)
    interp = str_to_interp_mode(cfg["interpolation"])
    if check_crop(crop) == "pad":
        steps[0:1] = [
            transforms.Resize(size, interpolation=interp),
            transforms.RandomCrop(size, padding=padding, padding_mode="reflect"),
        ]
    elif crop == "center":  # the eval resize and centre crop, without its final to-tensor step
        steps[0:1] = list(eval_transform(cfg, normalize=None).transforms[:-1])
    extra = list(secondary.transforms)
    if policy == "trivialaugment":
        extra.insert(0, transforms.TrivialAugmentWide(interpolation=interp))
    return transforms.Compose(steps + extra + list(final.transforms))
