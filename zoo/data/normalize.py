"""Input preprocessing from the lectures (docs/notes.md), with statistics computed on the training split only.

- ``center``:      x − μ                      (μ per channel)
- ``standardize``: (x − μ) / σ                (μ, σ per channel)
- ``pca``:         Λ^(−1/2) Uᵀ (x − μ)        (decorrelate, unit variance; Σ = U Λ Uᵀ over flattened pixels)
- ``zca``:         U Λ^(−1/2) Uᵀ (x − μ)      (PCA whitening rotated back to pixel space)
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("none", "center", "standardize", "pca", "zca")


class Normalizer(nn.Module):
    """Apply a preprocessing fitted with :func:`fit_normalizer` to N×C×H×W or C×H×W tensors."""

    def __init__(
        self, mode: str, shift: torch.Tensor, matrix: torch.Tensor | None, scale: torch.Tensor | None
    ):
        super().__init__()
        self.mode = mode
        self.register_buffer("shift", shift)
        self.register_buffer("matrix", matrix if matrix is not None else torch.empty(0))
        self.register_buffer("scale", scale if scale is not None else torch.empty(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        if self.mode in ("pca", "zca"):
            flat = (x.flatten(1) - self.shift) @ self.matrix
            x = flat.view(x.shape)
        elif self.mode != "none":
            x = x - self.shift
            if self.scale.numel():
                x = x / self.scale
        return x.squeeze(0) if single else x


def fit_normalizer(x: torch.Tensor, mode: str = "standardize", eps: float = 1e-2) -> Normalizer:
    """Fit ``mode`` on training images ``x`` (N×C×H×W). ``eps`` regularises the whitening eigenvalues."""
    if mode not in MODES:
        raise ValueError(f"unknown normalisation {mode!r}; choose one of {', '.join(MODES)}")
    x = x.double()
    if mode == "none":
        return Normalizer(mode, torch.zeros(1), None, None)
    if mode in ("center", "standardize"):
        mean = x.mean(dim=(0, 2, 3)).view(-1, 1, 1)
        std = x.std(dim=(0, 2, 3)).view(-1, 1, 1).clamp_min(1e-8) if mode == "standardize" else None
        return Normalizer(mode, mean.float(), None, None if std is None else std.float())
    flat = x.flatten(1)
    mean = flat.mean(0)
    cov = torch.cov((flat - mean).T)
    eigval, eigvec = torch.linalg.eigh(cov)
    inv_sqrt = torch.diag((eigval.clamp_min(0) + eps).rsqrt())
    # rows are samples, so the transform is applied as (x − μ) @ M
    matrix = eigvec @ inv_sqrt if mode == "pca" else eigvec @ inv_sqrt @ eigvec.T
    return Normalizer(mode, mean.float(), matrix.float(), None)
