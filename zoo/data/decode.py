"""Read an image file as an image viewer shows it: EXIF orientation applied, 8-bit RGB (or grey) pixels.

PIL's plain ``convert("RGB")`` clips 16-bit values at 255 (a 16-bit grey photo turns white), keeps the hidden
colour under transparent pixels and ignores the EXIF orientation of phone photos. Here:

- orientation: ``ImageOps.exif_transpose`` (torchvision's ``apply_exif_orientation`` on the JPEG fast path);
- 16-bit (``I;16``, ``I``): v₈ = round(v₁₆ · 255 / 65535); 32-bit float (``F``): v₈ = round(255 · v) for v in [0, 1];
- transparency (``RGBA``, ``LA``, ``P`` with a transparent colour, ``PA``): composited over white;
- ``CMYK``, ``1`` (1-bit), palette and other colour spaces: PIL's conversions, to 8-bit RGB or grey.

A JPEG is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling, PIL's ``Image.draft``) when the
caller's ``min_size`` allows it, i.e. when the image is to be shrunk by that much anyway. No library reads
images this way in one call, hence this file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as F

READ_ERRORS = (OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError)
ORIENTATION = 0x0112  # the EXIF tag; 5–8 swap width and height
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")
WHITE = (255, 255, 255, 255)

try:  # libjpeg-turbo straight into a tensor: no PIL image, no repacking copy
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - torchvision without its image codecs
    decode_jpeg = None


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1–8) of ``img`` from its header; 1 when it has none."""
    try:
        value = img.getexif().get(ORIENTATION, 1)
    except READ_ERRORS:
        return 1
    return value if value in range(1, 9) else 1


def conversions(img: Image.Image) -> list[str]:
    """What reading ``img`` (opened, not decoded) changes beyond decoding: the reasons counted in reports."""
    found = ["EXIF orientation applied"] if orientation(img) != 1 else []
    mode = img.mode
    if mode in SIXTEEN_BIT:
        found.append("16-bit scaled to 8-bit")
    elif mode == "F":
        found.append("32-bit float scaled to 8-bit")
    elif mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in img.info
        found.append("palette with transparency, over white" if transparent else "palette to RGB")
    elif mode in ALPHA:
        found.append("transparency composited over white")
    elif mode == "CMYK":
        found.append("CMYK to RGB")
    elif mode == "1":
        found.append("1-bit to 8-bit")
    elif mode not in ("RGB", "L"):
        found.append(f"{mode} to RGB")
    return found


def to_mode(img: Image.Image, mode: str = "RGB") -> Image.Image:
    """``img`` (decoded) as 8-bit ``mode`` (``RGB`` or ``L``) with the value ranges of the module docstring."""
    m = img.mode
    if m in SIXTEEN_BIT:
        v = np.asarray(img).astype(np.int64).clip(0, 65535)
        img = Image.fromarray(((v * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif m == "F":
        v = np.nan_to_num(np.asarray(img, dtype=np.float64))
        v = v * 255 if v.max(initial=0) <= 1 else v
        img = Image.fromarray(v.round().clip(0, 255).astype(np.uint8), "L")
    elif m in ALPHA or (m == "P" and "transparency" in img.info):
        img = Image.alpha_composite(Image.new("RGBA", img.size, WHITE), img.convert("RGBA"))
    if img.mode == mode:
        return img
    if img.mode not in ("RGB", "L", "RGBA"):
        img = img.convert("RGB")
    return img.convert(mode)


class Source:
    """An image file opened from its header (size, mode, orientation known; nothing decoded yet).

    ``size`` is the displayed (width, height); :meth:`pil` and :meth:`tensor` decode it, at a reduced scale
    when every side stays at least ``min_size``.
    """

    def __init__(self, path: str | Path, mode: str = "RGB"):
        self.path, self.mode = str(path), mode
        with open(path, "rb") as f:
            self.data = f.read()
        self.img = Image.open(io.BytesIO(self.data))
        self.turned = orientation(self.img) in (5, 6, 7, 8)

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.img.size
        return (h, w) if self.turned else (w, h)

    def _draft(self, min_size: tuple[int, int] | None) -> bool:
        """Ask libjpeg for the smallest 1/2ᵏ scale keeping both sides ≥ ``min_size``; True if it shrinks."""
        if min_size is None or self.img.format != "JPEG":
            return False
        w, h = (min_size[1], min_size[0]) if self.turned else min_size
        full = self.img.size
        if full[0] < 2 * w or full[1] < 2 * h:
            return False
        self.img.draft(self.img.mode if self.img.mode in ("RGB", "L") else None, (max(w, 1), max(h, 1)))
        return self.img.size != full

    def pil(self, min_size: tuple[int, int] | None = None) -> Image.Image:
        """The decoded image in ``mode``, turned upright (``min_size``: displayed sides to keep)."""
        self._draft(min_size)
        self.img.load()
        return to_mode(ImageOps.exif_transpose(self.img), self.mode)

    def tensor(self, min_size: tuple[int, int] | None = None) -> torch.Tensor:
        """The decoded image as a uint8 C×H×W tensor (a plain JPEG goes straight through libjpeg-turbo)."""
        plain = self.img.format == "JPEG" and self.img.mode in ("RGB", "L")
        if plain and decode_jpeg is not None and not self._draft(min_size):
            read = ImageReadMode.RGB if self.mode == "RGB" else ImageReadMode.GRAY
            data = torch.frombuffer(bytearray(self.data), dtype=torch.uint8)
            with warnings.catch_warnings():  # torchvision 0.29 marks its codecs deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(data, mode=read, apply_exif_orientation=True)
        return F.pil_to_tensor(self.pil(min_size))


class Loaded:
    """An image already in memory (a PIL image or a uint8 C×H×W tensor) behind :class:`Source`'s methods."""

    def __init__(self, image: Image.Image | torch.Tensor, mode: str | None = None):
        self.image, self.mode = image, mode

    @property
    def size(self) -> tuple[int, int]:
        if isinstance(self.image, torch.Tensor):
            return self.image.shape[-1], self.image.shape[-2]
        return self.image.size

    def pil(self, min_size=None) -> Image.Image:
        if isinstance(self.image, torch.Tensor):
            return F.to_pil_image(self.image)
        mode = self.mode or (self.image.mode if self.image.mode in ("RGB", "L") else "RGB")
        return to_mode(self.image, mode)

    def tensor(self, min_size=None) -> torch.Tensor:
        if isinstance(self.image, torch.Tensor):
            return self.image
        return F.pil_to_tensor(self.pil())


def as_source(x) -> Source | Loaded:
    """``x`` (a :class:`Source`, a path, a PIL image or a tensor) behind the ``size`` / ``pil`` / ``tensor`` API."""
    if isinstance(x, (Source, Loaded)):
        return x
    if isinstance(x, (str, Path)):
        return Source(x)
    return Loaded(x)


def read_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """The image at ``path`` as a viewer shows it, decoded in full: upright, 8-bit ``mode``."""
    return Source(path, mode).pil()
