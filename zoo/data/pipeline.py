"""Decode-and-crop steps of the input pipeline, and the late normalisation of uint8 batches.

A crop is drawn from the size in the file's header, before any pixel is decoded; the JPEG is then decoded at
the smallest scale s ∈ {1, 1/2, 1/4, 1/8} at which the crop still has at least the output's pixels (libjpeg's
DCT scaling: a crop shrunk 2× or more anyway costs a fraction of a full decode), and the crop is resized on
uint8 tensors (``transforms.v2``, antialiased as PIL does). Images stay uint8 until the batch is on its
device, where x ↦ (x / 255 − μ) / σ runs once per batch (:func:`normalize`): uint8 batches cross the bus,
4× less than float32. torchvision's crops take a decoded image; none draws the crop before decoding, hence
these two classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from zoo.data.decode import as_source


def _extent(h: int, w: int) -> torch.Tensor:
    """A 1×h×w tensor holding no memory: what timm's ``get_params`` reads the size from."""
    return torch.zeros((), dtype=torch.uint8).expand(1, h, w)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _resized_crop(img, full, box, size, interpolation) -> torch.Tensor:
    """Crop ``box`` (top, left, height, width in the full image ``full`` = (w, h)) of the decoded ``img``,
    which may be smaller than ``full``, and resize it to ``size``."""
    fy, fx = img.shape[-2] / full[1], img.shape[-1] / full[0]
    top, left, h, w = box
    t, lft = round(top * fy), round(left * fx)
    h, w = max(1, min(round(h * fy), img.shape[-2] - t)), max(1, min(round(w * fx), img.shape[-1] - lft))
    return F.resized_crop(img, t, lft, h, w, list(size), interpolation=interpolation, antialias=True)


class RandomResizedCropDecode:
    """RandomResizedCrop (area in ``scale``, aspect ratio log-uniform in ``ratio``, resized to ``size``; timm's
    parameters) drawn before decoding, so the JPEG decodes at the smallest scale that keeps the crop ≥ ``size``."""

    takes_source = True

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    ):
        self.size, self.scale, self.ratio, self.interpolation = (
            _pair(size),
            tuple(scale),
            tuple(ratio),
            interpolation,
        )

    def __call__(self, x) -> torch.Tensor:
        src = as_source(x)
        w, h = src.size
        box = RandomResizedCropAndInterpolation.get_params(_extent(h, w), self.scale, self.ratio)
        _, _, ch, cw = box
        need = (math.ceil(w * self.size[1] / cw), math.ceil(h * self.size[0] / ch))
        return _resized_crop(src.tensor(need), (w, h), box, self.size, self.interpolation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class ResizeDecode:
    """Resize the short side to ``size`` (an int; the long side as torchvision's ``Resize`` computes it) or
    to exactly (h, w), then centre-crop ``crop`` (None: no crop); decoded at the smallest scale that keeps the
    resized size."""

    takes_source = True

    def __init__(
        self,
        size: int | Sequence[int],
        crop: int | Sequence[int] | None = None,
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    ):
        self.size, self.crop, self.interpolation = size, None if crop is None else _pair(crop), interpolation

    def __call__(self, x) -> torch.Tensor:
        src = as_source(x)
        w, h = src.size
        if isinstance(self.size, int):
            short, long = sorted((w, h))
            new_short, new_long = self.size, int(self.size * long / short)
            out = (new_short, new_long) if h <= w else (new_long, new_short)
        else:
            out = _pair(self.size)
        img = src.tensor((out[1], out[0]))
        if tuple(img.shape[-2:]) != out:
            img = F.resize(img, list(out), interpolation=self.interpolation, antialias=True)
        return img if self.crop is None else F.center_crop(img, list(self.crop))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, crop={self.crop})"


class DecodePIL:
    """The decoded PIL image, upright and in the dataset's mode: the start of a pipeline that needs PIL."""

    takes_source = True

    def __call__(self, x):
        return as_source(x).pil()


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 − μ) / σ per channel of a uint8 image or batch (…×C×H×W), as float32 on x's device."""
    shape = (-1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(shape) * 255
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(shape) * 255
    return x.to(torch.float32).sub_(m).div_(s)
