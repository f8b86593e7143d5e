"""Train / eval transforms: sizes and normalisation against closed forms, each augmentation switch, bad names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
from torchvision import transforms

from zoo.data.transforms import AUTO_AUGMENT, data_config, eval_transform, train_transform


def gradient(h: int = 40, w: int = 60) -> Image.Image:
    """An image whose every pixel differs from its mirror image: red grows left to right, green top to bottom."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.full((h, w), 90.0)], -1).astype("uint8"))


def cfg32(**kw) -> dict:
    return data_config(None, 3, 32, interpolation="bilinear", crop_pct=kw.pop("crop_pct", 1.0), **kw)


def test_eval_normalises_with_the_closed_form():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    image = Image.fromarray(np.full((50, 70, 3), (51, 102, 204), "uint8"))
    x = eval_transform(cfg32(mean=mean, std=std))(image)
    expected = (torch.tensor([51, 102, 204]) / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x, expected.view(3, 1, 1).expand(3, 32, 32), atol=1e-6)


def test_eval_resizes_the_short_side_to_size_over_crop_pct_then_crops_the_centre():
    evaluate = eval_transform(data_config(None, 3, 224, crop_pct=0.875))
    resize, crop = evaluate.transforms[:2]
    assert resize.size == 256 and crop.size == (224, 224)  # ⌊224 / 0.875⌋ = 256
    assert evaluate(gradient(300, 500)).shape == (3, 224, 224)


def test_random_resized_crop_varies_eval_does_not():
    train, evaluate = train_transform(cfg32(), hflip=0.0), eval_transform(cfg32())
    torch.manual_seed(0)
    crops = [train(gradient()) for _ in range(5)]
    assert all(c.shape == (3, 32, 32) for c in crops)
    assert any(not torch.allclose(crops[0], c) for c in crops[1:])
    assert torch.equal(evaluate(gradient()), evaluate(gradient()))


def test_horizontal_flip_mirrors_the_centre_crop():
    cfg = cfg32()
    flipped = train_transform(cfg, crop="center", hflip=1.0)(gradient())
    assert torch.allclose(flipped, eval_transform(cfg)(gradient()).flip(-1), atol=1e-6)
    kept = train_transform(cfg, crop="center", hflip=0.0)(gradient())
    assert torch.allclose(kept, eval_transform(cfg)(gradient()), atol=1e-6)


def test_pad_crop_is_a_translation_of_the_reflect_padded_image():
    cfg = cfg32(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    image = gradient(32, 32)
    padded = np.pad(np.asarray(image), ((4, 4), (4, 4), (0, 0)), mode="reflect")
    train = train_transform(cfg, crop="pad", padding=4, hflip=0.0)
    torch.manual_seed(1)
    offsets = set()
    for _ in range(8):
        out = (train(image) * 255).round().byte().permute(1, 2, 0).numpy()
        found = [
            (i, j) for i in range(9) for j in range(9) if np.array_equal(padded[i : i + 32, j : j + 32], out)
        ]
        assert found, "the output is not a 32×32 window of the padded image"
        offsets.add(found[0])
    assert len(offsets) > 1


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("randaugment", RandAugment),
        ("autoaugment", AutoAugment),
        ("augmix", AugMixAugment),
        ("trivialaugment", transforms.TrivialAugmentWide),
        ("rand-m5-n3", RandAugment),
    ],
)
def test_auto_augment_policies_by_name(name, kind):
    train = train_transform(cfg32(), auto_augment=name, color_jitter=0.4)
    found = [t for t in train.transforms if isinstance(t, kind)]
    assert len(found) == 1
    if name == "rand-m5-n3":
        assert found[0].num_layers == 3
    assert not any(
        isinstance(t, transforms.ColorJitter) for t in train.transforms
    )  # a policy replaces jitter
    assert train(gradient()).shape == (3, 32, 32)
    assert set(AUTO_AUGMENT) >= {"randaugment", "trivialaugment", "autoaugment", "augmix"}


def test_colour_jitter_and_random_erasing_switches():
    plain = train_transform(cfg32())
    assert not any(isinstance(t, transforms.ColorJitter) for t in plain.transforms)
    jitter = next(
        t
        for t in train_transform(cfg32(), color_jitter=0.4).transforms
        if isinstance(t, transforms.ColorJitter)
    )
    assert jitter.brightness == pytest.approx((0.6, 1.4)) and jitter.saturation == pytest.approx((0.6, 1.4))
    cfg = cfg32()
    erase = train_transform(cfg, crop="center", hflip=0.0, re_prob=1.0)
    torch.manual_seed(0)
    erased = erase(gradient())
    assert (erased != eval_transform(cfg)(gradient())).any()  # a random box is erased in every image


def test_bad_names_and_grey_images_with_a_timm_policy():
    with pytest.raises(ValueError, match="unknown auto_augment 'randaug'"):
        train_transform(cfg32(), auto_augment="randaug")
    with pytest.raises(ValueError, match="unknown crop 'square'"):
        train_transform(cfg32(), crop="square")
    grey = data_config(None, 1, 32)
    with pytest.raises(ValueError, match="needs RGB images"):
        train_transform(grey, auto_augment="randaugment")
    out = train_transform(grey, auto_augment="trivialaugment")(gradient().convert("L"))
    assert out.shape == (1, 32, 32)


def test_data_config_overrides_and_channel_averaging():
    backbone = {
        "input_size": (3, 288, 288),
        "interpolation": "bicubic",
        "mean": (0.3, 0.6, 0.9),
        "std": (0.3, 0.3, 0.6),
    }
    cfg = data_config(backbone)
    assert cfg["input_size"] == (3, 288, 288) and cfg["mean"] == (0.3, 0.6, 0.9)
    cfg = data_config(backbone, 3, [128, 96], interpolation="bilinear", crop_pct=0.95, std=(1.0, 1.0, 1.0))
    assert (
        cfg["input_size"] == (3, 128, 96) and cfg["interpolation"] == "bilinear" and cfg["crop_pct"] == 0.95
    )
    assert cfg["mean"] == (0.3, 0.6, 0.9) and cfg["std"] == (1.0, 1.0, 1.0)
    grey = data_config(backbone, 1)
    assert grey["input_size"] == (1, 288, 288)
    assert grey["mean"] == pytest.approx((0.6,)) and grey["std"] == pytest.approx((0.4,))
