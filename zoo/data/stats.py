"""Per-channel statistics of a data set, for centering and normalisation with the training split's own values.

μ_c = Σ x / n and σ_c = sqrt(Σ x² / n − μ_c²) over every pixel of channel c of every (sampled) training image.
timm and torchvision ship fixed ImageNet values only; no library computes them for a data set of one's own,
hence these few lines (sums in float64, so millions of pixels lose no precision).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from zoo.data.tensor import collate


def channel_stats(
    dataset: Dataset, max_images: int = 0, seed: int = 0, batch_size: int = 64, num_workers: int = 0
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation per channel of the images of ``dataset`` (items ``(C×H×W tensor, ...)``;
    uint8 images count as x / 255).

    ``max_images > 0`` estimates them from that many images drawn without replacement with ``seed``.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot compute image statistics of an empty data set")
    if 0 < max_images < n:
        picked = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_images]
        dataset = Subset(dataset, picked.sort().values.tolist())
    total = total_sq = None
    count = 0
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        x = x.double() / 255 if x.dtype == torch.uint8 else x.double()
        if total is None:
            total = torch.zeros(x.shape[1], dtype=torch.float64)
            total_sq = torch.zeros_like(total)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
        count += x.numel() // x.shape[1]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()
