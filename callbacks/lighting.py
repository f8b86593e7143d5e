"""PCA lighting noise (Krizhevsky et al., 2012; the Bag-of-Tricks ImageNet augmentation, He et al., 2019).

Each training image gets one RGB offset along the principal components of ImageNet's pixel colours,
δ = Σ_i α_i·λ_i·v_i with α_i ~ N(0, σ_α²), added to every pixel. Neither timm nor torchvision has it, so it is
written here. It runs on the device batch the training step gets: the image data modules normalise uint8
images there, x ↦ (x − μ)/s, and adding δ before that is adding δ/s after it, so the callback adds δ/s with the
data module's own s (or δ itself for data that is not normalised that way, e.g. the synthetic images).
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from zoo.protocols import ModelPreprocessing

# ImageNet's RGB covariance on [0, 1] pixels (AlexNet; fb.resnet.torch and GluonCV use the same values):
# eigenvalues λ_i and the eigenvectors v_i as the columns of EIGVEC
EIGVAL = (0.2175, 0.0188, 0.0045)
EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def lighting_offsets(
    n: int, alpha_std: float, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """n RGB offsets (n×3, on [0, 1] pixels): δ = V·(α ⊙ λ), α ~ N(0, σ_α²) per image and component."""
    alpha = torch.randn(n, 3, generator=generator, device=device) * alpha_std
    eigval = torch.tensor(EIGVAL, device=device)
    eigvec = torch.tensor(EIGVEC, device=device)
    return (alpha * eigval) @ eigvec.T


def pca_lighting(
    x: torch.Tensor, alpha_std: float = 0.1, scale=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """x + δ/s for an N×3×H×W batch: each image's offset δ (:func:`lighting_offsets`) over its channel scale s."""
    delta = lighting_offsets(len(x), alpha_std, x.device, generator)
    if scale is not None:
        delta = delta / torch.as_tensor(scale, dtype=delta.dtype, device=x.device)
    return x + delta.to(x.dtype)[:, :, None, None]


class PCALighting(Callback):
    """x ← x + δ/s on every training batch: δ = Σ_i α_i·λ_i·v_i, α_i ~ N(0, σ_α²) (ImageNet's colour PCA).

    s is the std the data module normalised the batch with (the image modules' ``config["std"]``); 1 for data
    not normalised by the data module. Validation, test and predict batches are left alone.

    Args:
        alpha_std: σ_α (0.1 in AlexNet and the Bag of Tricks).
    """

    def __init__(self, alpha_std: float = 0.1):
        if not alpha_std >= 0:
            raise ValueError(f"PCALighting: alpha_std={alpha_std!r} must be ≥ 0")
        self.alpha_std = float(alpha_std)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if self.alpha_std == 0 or not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"PCALighting: needs RGB image batches (N×3×H×W), got {tuple(x.shape)}: remove it from "
                "trainer.callbacks for this data"
            )
        dm = trainer.datamodule  # its config: what on_after_batch_transfer normalised with
        config = dm.config if isinstance(dm, ModelPreprocessing) else None
        x.copy_(pca_lighting(x, self.alpha_std, config["std"] if config else None))
