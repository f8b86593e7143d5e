"""Class-activation heat maps: where a convolutional network looks for a class.

Grad-CAM (Selvaraju et al. 2017): L^c = ReLU(Σ_k α_k^c A^k), α_k^c = mean_ij ∂y^c/∂A^k_ij, on the network's last
spatial feature map A, upsampled to the input and scaled to [0, 1] per image. captum's ``LayerGradCam`` computes
it; this module adds what captum leaves to its caller: which layer that is in any CNN (timm's and the zoo's
alike, found by a dry run instead of a per-family table), a run that works inside Lightning's ``predict``
(inference mode) and with frozen layers, and the picture of a heat map over its image.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from zoo.tools.sheet import pixels

INSTALL = "pip install 'lightning-zoo[inspect]' (captum)"


class NoFeatureMap(ValueError):
    """The network has no spatial feature map to explain (a vision transformer's tokens, a 1×1 map)."""


@torch.no_grad()
def feature_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The module that makes the last feature map of ``model`` on ``x``: the last one, in the order the forward
    pass finishes them, that runs once and returns an N×C×H×W tensor with H·W > 1 (a stage, a block, the
    head's conv before global pooling)."""
    calls: list[tuple[nn.Module, bool]] = []
    counts: dict[int, int] = {}

    def seen(module, _args, out):
        counts[id(module)] = counts.get(id(module), 0) + 1
        spatial = torch.is_tensor(out) and out.dim() == 4 and out.shape[-2] * out.shape[-1] > 1
        calls.append((module, spatial))

    hooks = [m.register_forward_hook(seen) for m in model.modules() if m is not model]
    try:
        model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    for module, spatial in reversed(calls):
        if spatial and counts[id(module)] == 1:
            return module
    raise NoFeatureMap(
        f"{type(model).__name__} has no spatial feature map (N×C×H×W, H·W > 1) at this input size, so it has no "
        "class-activation heat map; heat maps are for convolutional networks"
    )


def heat_maps(model: nn.Module, x: torch.Tensor, targets, layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM of class ``targets`` (an int, or one per image) for the batch ``x``: N×H×W in [0, 1], each map
    divided by its maximum (all 0 where no location raises the class's score). The model runs in eval mode;
    no parameter's ``.grad`` changes (captum differentiates with respect to the feature map only)."""
    try:
        from captum.attr import LayerAttribution, LayerGradCam
    except ImportError as err:
        raise ImportError(f"heat maps need captum: {INSTALL}") from err
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().float()  # a normal tensor even inside Lightning's predict (inference mode)
            x.requires_grad_(True)  # a graph down to the input, even when every layer is frozen
            layer = layer or feature_layer(model, x)
            if isinstance(targets, torch.Tensor):
                targets = targets.detach().clone().to(x.device)
            cam = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)
            cam = LayerAttribution.interpolate(cam.detach().float(), tuple(x.shape[-2:]), "bilinear")[:, 0]
    finally:
        model.train(was_training)
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (cam.clamp_min(0) / peak).cpu()


def overlay(image: torch.Tensor | np.ndarray, cam: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """H×W×3 floats in [0, 1]: ``image`` (as :func:`zoo.tools.sheet.pixels` reads it) blended with ``cam`` (H×W in
    [0, 1]) in matplotlib's ``jet`` colours, hot = red."""
    from matplotlib import colormaps

    heat = colormaps["jet"](cam.numpy())[..., :3]
    return (1 - alpha) * pixels(image) + alpha * heat


__all__ = ["INSTALL", "NoFeatureMap", "feature_layer", "heat_maps", "overlay"]
