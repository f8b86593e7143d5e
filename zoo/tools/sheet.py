"""Contact sheets: many small images, each titled, tiled into one picture (reports, suspects, heat maps).

matplotlib draws the text; the images are pasted into one array shown on one axes, because a subplot per image
took 32 axes to lay out and draw (~1 s at the end of a run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

FAST_PNG = {
    "compress_level": 1
}  # zlib's fastest: PNGs written ~2× faster than at Pillow's default 6, ~20% larger


def pixels(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """C×H×W tensor (1 or 3 channels, any scale) or H×W(×C) uint8 array → H×W×3 floats in [0, 1]; a tensor is
    stretched to its own min..max (a normalised model input shows as the photo)."""
    if isinstance(image, np.ndarray):
        array = image.astype(np.float32) / 255.0
        array = array[..., None] if array.ndim == 2 else array
    else:
        image = image.detach().float().cpu()
        image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
        array = image.permute(1, 2, 0).numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[..., :3]


def thumbnail(path: str, mode: str = "RGB", side: int = 160) -> np.ndarray:
    """The image file as a viewer shows it, fitted into side × side on white (H×W×C uint8)."""
    from PIL import ImageOps

    from zoo.data.decode import Source

    image = Source(path, "L" if mode == "L" else "RGB").pil()
    return np.asarray(ImageOps.pad(image, (side, side), color="white"))


def contact_sheet(
    cells: Sequence[Sequence[np.ndarray]], titles: Sequence[str], cols: int = 8, inches: float = 1.8
):
    """A matplotlib Figure: each cell's panels (H×W×3 floats in [0, 1]) side by side under its title (lines split
    by ``\\n``), ``cols`` cells to a row, each panel ``inches`` wide."""
    from matplotlib.figure import Figure

    panels = max(len(c) for c in cells)
    cols = min(cols, len(cells))
    rows = math.ceil(len(cells) / cols)
    h = max(p.shape[0] for c in cells for p in c)
    w = max(p.shape[1] for c in cells for p in c)
    gap = max(1, w // 12)
    scale = inches / (w + gap)  # inches per pixel of the mosaic
    lines = max(t.count("\n") + 1 for t in titles)
    pad_top = math.ceil((0.15 * lines + 0.05) / scale)  # room for the title: 8-point lines
    cell_h, cell_w = h + pad_top + gap, panels * (w + gap) + gap
    mosaic = np.ones((rows * cell_h, cols * cell_w, 3), dtype=np.float32)
    fig = Figure(figsize=(mosaic.shape[1] * scale, mosaic.shape[0] * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    for k, (cell, title) in enumerate(zip(cells, titles)):
        top, left = (k // cols) * cell_h + pad_top, (k % cols) * cell_w + gap
        for p, panel in enumerate(cell):
            x = left + p * (w + gap)
            mosaic[top : top + panel.shape[0], x : x + panel.shape[1]] = panel
        ax.text(left + (cell_w - 2 * gap) / 2, top - gap / 2, title, fontsize=8, ha="center", va="bottom")
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    return fig


def save(fig, path) -> None:
    """Write ``fig`` as a PNG, fast (zlib level 1)."""
    fig.savefig(path, dpi=100, pil_kwargs=FAST_PNG)


__all__ = ["FAST_PNG", "contact_sheet", "pixels", "save", "thumbnail"]
