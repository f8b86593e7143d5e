"""Train / eval transforms: sizes and normalisation against closed forms, each augmentation switch, bad names,
JPEGs decoded at reduced size, and the zoo's images against torchvision's reference pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import AugMixAugment, AutoAugment, RandAugment
from torchvision import transforms
from torchvision.transforms import v2

from zoo.data.decode import Source
from zoo.data.pipeline import RandomResizedCropDecode, ResizeDecode, normalize
from zoo.data.transforms import AUTO_AUGMENT, eval_transform, merge_data_config, train_transform


def gradient(h: int = 40, w: int = 60) -> Image.Image:
    """An image whose every pixel differs from its mirror image: red grows left to right, green top to bottom."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.full((h, w), 90.0)], -1).astype("uint8"))


def cfg32(**kw) -> dict:
    return merge_data_config(None, 3, 32, interpolation="bilinear", crop_pct=kw.pop("crop_pct", 1.0), **kw)


def test_eval_normalises_with_the_closed_form():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    image = Image.fromarray(np.full((50, 70, 3), (51, 102, 204), "uint8"))
    expected = (torch.tensor([51, 102, 204]) / 255 - torch.tensor(mean)) / torch.tensor(std)
    raw = eval_transform(cfg32(mean=mean, std=std), normalize=False)(image)
    assert raw.shape == (3, 32, 32) and raw.dtype == torch.uint8  # normalised later, per batch
    late = normalize(raw[None], mean, std)[0]
    now = eval_transform(cfg32(mean=mean, std=std), normalize=True)(image)
    for x in (late, now):
        assert x.dtype == torch.float32
        assert torch.allclose(x, expected.view(3, 1, 1).expand(3, 32, 32), atol=1e-6)


def test_eval_resizes_the_short_side_to_size_over_crop_pct_then_crops_the_centre():
    evaluate = eval_transform(merge_data_config(None, 3, 224, crop_pct=0.875))
    resize = evaluate.transforms[0]
    assert (
        isinstance(resize, ResizeDecode) and resize.size == 256 and resize.crop == (224, 224)
    )  # ⌊224/0.875⌋
    assert evaluate(gradient(300, 500)).shape == (3, 224, 224)


def test_random_resized_crop_varies_eval_does_not():
    train, evaluate = train_transform(cfg32(), hflip=0.0), eval_transform(cfg32())
    torch.manual_seed(0)
    crops = [train(gradient()) for _ in range(5)]
    assert all(c.shape == (3, 32, 32) for c in crops)
    assert any(not torch.equal(crops[0], c) for c in crops[1:])
    assert torch.equal(evaluate(gradient()), evaluate(gradient()))


def test_horizontal_flip_mirrors_the_centre_crop():
    cfg = cfg32()
    flipped = train_transform(cfg, crop="center", hflip=1.0)(gradient())
    assert torch.equal(flipped, eval_transform(cfg)(gradient()).flip(-1))
    kept = train_transform(cfg, crop="center", hflip=0.0)(gradient())
    assert torch.equal(kept, eval_transform(cfg)(gradient()))


def test_pad_crop_is_a_translation_of_the_reflect_padded_image():
    cfg = cfg32(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    image = gradient(32, 32)
    padded = np.pad(np.asarray(image), ((4, 4), (4, 4), (0, 0)), mode="reflect")
    train = train_transform(cfg, crop="pad", padding=4, hflip=0.0, normalize=False)
    torch.manual_seed(1)
    offsets = set()
    for _ in range(8):
        out = train(image).permute(1, 2, 0).numpy()
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
        ("trivialaugment", v2.TrivialAugmentWide),
        ("rand-m5-n3", RandAugment),
    ],
)
def test_auto_augment_policies_by_name(name, kind):
    train = train_transform(cfg32(), auto_augment=name, color_jitter=0.4, normalize=False)
    found = [t for t in train.transforms if isinstance(t, kind)]
    assert len(found) == 1
    if name == "rand-m5-n3":
        assert found[0].num_layers == 3
    jitters = (transforms.ColorJitter, v2.ColorJitter)
    assert not any(isinstance(t, jitters) for t in train.transforms)  # a policy replaces jitter
    out = train(gradient())
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert set(AUTO_AUGMENT) >= {"randaugment", "trivialaugment", "autoaugment", "augmix"}


def test_colour_jitter_and_random_erasing_switches():
    plain = train_transform(cfg32())
    assert not any(isinstance(t, v2.ColorJitter) for t in plain.transforms)
    jitter = next(
        t for t in train_transform(cfg32(), color_jitter=0.4).transforms if isinstance(t, v2.ColorJitter)
    )
    assert jitter.brightness == pytest.approx((0.6, 1.4)) and jitter.saturation == pytest.approx((0.6, 1.4))
    torch.manual_seed(0)
    images = torch.stack(
        [
            train_transform(cfg32(), color_jitter=0.4, hflip=0.0, crop="center", normalize=False)(gradient())
            for _ in range(4)
        ]
    )
    assert images.float().mean((1, 2, 3)).std() > 1  # brightness varies from image to image
    cfg = cfg32()
    erase = train_transform(cfg, crop="center", hflip=0.0, re_prob=1.0, normalize=True)
    torch.manual_seed(0)
    erased = erase(gradient())
    box = erased != eval_transform(cfg, normalize=True)(gradient())
    assert box.any() and (erased[box] == 0).all()  # a random box is set to 0 (the mean) in every image


def test_bad_names_and_grey_images_with_a_timm_policy():
    with pytest.raises(ValueError, match="unknown auto_augment 'randaug'"):
        train_transform(cfg32(), auto_augment="randaug")
    with pytest.raises(ValueError, match="unknown crop 'square'"):
        train_transform(cfg32(), crop="square")
    grey = merge_data_config(None, 1, 32)
    with pytest.raises(ValueError, match="needs RGB images"):
        train_transform(grey, auto_augment="randaugment")
    out = train_transform(grey, auto_augment="trivialaugment", normalize=False)(gradient().convert("L"))
    assert out.shape == (1, 32, 32) and out.dtype == torch.uint8


def test_merge_data_config_overrides_and_channel_averaging():
    backbone = {
        "input_size": (3, 288, 288),
        "interpolation": "bicubic",
        "mean": (0.3, 0.6, 0.9),
        "std": (0.3, 0.3, 0.6),
    }
    cfg = merge_data_config(backbone)
    assert cfg["input_size"] == (3, 288, 288) and cfg["mean"] == (0.3, 0.6, 0.9)
    cfg = merge_data_config(
        backbone, 3, [128, 96], interpolation="bilinear", crop_pct=0.95, std=(1.0, 1.0, 1.0)
    )
    assert (
        cfg["input_size"] == (3, 128, 96) and cfg["interpolation"] == "bilinear" and cfg["crop_pct"] == 0.95
    )
    assert cfg["mean"] == (0.3, 0.6, 0.9) and cfg["std"] == (1.0, 1.0, 1.0)
    grey = merge_data_config(backbone, 1)
    assert grey["input_size"] == (1, 288, 288)
    assert grey["mean"] == pytest.approx((0.6,)) and grey["std"] == pytest.approx((0.4,))


def photo_jpeg(path, size=(1000, 750), quality=92) -> Image.Image:
    """A real photo (scikit-learn's sample) resized to ``size`` and saved as a JPEG at ``path``."""
    from sklearn.datasets import load_sample_images

    img = Image.fromarray(load_sample_images().images[0]).resize(size, Image.BILINEAR)
    img.save(path, quality=quality)
    return img


def test_jpeg_decoded_at_reduced_size_only_when_the_crop_shrinks_it_anyway(tmp_path):
    photo_jpeg(tmp_path / "big.jpg")  # 1000×750
    src = Source(tmp_path / "big.jpg")
    whole = RandomResizedCropDecode(224, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))  # the whole image to 224×224
    out = whole(src)
    assert src.img.size == (500, 375)  # libjpeg decoded it at 1/2: still ≥ 224 on both sides
    full = v2.functional.resize(
        v2.functional.pil_to_tensor(Image.open(tmp_path / "big.jpg").convert("RGB")),
        [224, 224],
        antialias=True,
    )
    assert out.shape == (3, 224, 224) and (out.float() - full.float()).abs().mean() < 3  # the same picture
    src = Source(tmp_path / "big.jpg")
    RandomResizedCropDecode(224, scale=(0.1, 0.1))(src)  # a 300×250 crop: shrunk less than 2×
    assert src.img.size == (1000, 750)
    src = Source(tmp_path / "big.jpg")
    assert ResizeDecode(256, 224)(src).shape == (3, 224, 224) and src.img.size == (500, 375)  # 750 → 256


def test_eval_crop_of_a_rotated_phone_photo_is_upright(tmp_path):
    upright = photo_jpeg(tmp_path / "upright.jpg", size=(80, 40))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned 90° clockwise: the viewer turns it back
    upright.transpose(Image.Transpose.ROTATE_270).save(
        tmp_path / "phone.jpg", exif=exif.tobytes(), quality=92
    )
    evaluate = eval_transform(merge_data_config(None, 3, 32, crop_pct=1.0), normalize=False)
    a, b = evaluate(Source(tmp_path / "phone.jpg")), evaluate(Source(tmp_path / "upright.jpg"))
    assert (a.float() - b.float()).abs().mean() < 6  # JPEG noise only; sideways it differs by ~40


def reference_train(size: int, mean, std, **crop) -> transforms.Compose:
    """torchvision's reference: RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize (on PIL images)."""
    steps = [transforms.RandomResizedCrop(size, **crop), transforms.RandomHorizontalFlip()]
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(mean, std)])


def test_zoo_images_match_torchvision_reference_in_size_range_and_statistics(tmp_path):
    """Against ImageFolder's PIL loading + RandomResizedCrop, flip, ToTensor, Normalize: the same size, dtype and
    range; per-channel statistics of many random crops close; the same crop resized to nearly the same pixels."""
    import random

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    paths = []
    for i, size in enumerate([(500, 375), (375, 500), (640, 427)]):
        photo_jpeg(tmp_path / f"{i}.jpg", size=size)
        paths.append(tmp_path / f"{i}.jpg")
    cfg = merge_data_config(None, 3, 224, interpolation="bilinear", crop_pct=0.875, mean=mean, std=std)
    torch.manual_seed(0)
    random.seed(0)
    ref = torch.stack([reference_train(224, mean, std)(Image.open(p).convert("RGB")) for p in paths * 4])
    ours = normalize(
        torch.stack([train_transform(cfg, normalize=False)(Source(p)) for p in paths * 4]), mean, std
    )
    assert ours.shape == ref.shape == (12, 3, 224, 224) and ours.dtype == ref.dtype == torch.float32
    lo, hi = (0 - torch.tensor(mean)) / torch.tensor(std), (1 - torch.tensor(mean)) / torch.tensor(std)
    per_channel = ours.transpose(0, 1).flatten(1)
    assert (per_channel.min(1).values >= lo - 1e-5).all() and (per_channel.max(1).values <= hi + 1e-5).all()
    # statistics over 600 random crops a side (at 32 pixels, to keep it quick): close, not equal
    small = merge_data_config(None, 3, 32, interpolation="bilinear", crop_pct=0.875, mean=mean, std=std)
    images = [Image.open(p).convert("RGB").resize((200, 150)) for p in paths]
    ref = torch.stack([reference_train(32, mean, std)(img) for img in images * 200])
    zoo = train_transform(small, normalize=False)
    ours = normalize(torch.stack([zoo(img) for img in images * 200]), mean, std)
    assert torch.allclose(ours.mean((0, 2, 3)), ref.mean((0, 2, 3)), atol=0.05)
    assert torch.allclose(ours.std((0, 2, 3)), ref.std((0, 2, 3)), atol=0.05)
    assert not torch.equal(ours.mean((0, 2, 3)), ref.mean((0, 2, 3)))
    # one and the same crop (the whole 4:3 image, no flip): nearly the same pixels
    whole = {"scale": (1.0, 1.0), "ratio": (4 / 3, 4 / 3)}
    ref_whole = reference_train(224, mean, std, **whole)
    ref_whole.transforms[1].p = 0.0
    a = ref_whole(Image.open(paths[0]).convert("RGB"))
    b = normalize(
        train_transform(cfg, scale=(1.0, 1.0), hflip=0.0, normalize=False)(Source(paths[0])), mean, std
    )
    assert (a - b).abs().mean() < 0.02  # under 1/255 of the range on average
    # eval: resize 256, centre crop 224, deterministic: the same pixels up to resampling differences
    ref_eval = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    zoo_eval = eval_transform(cfg, normalize=False)
    for p in paths:
        a, b = normalize(zoo_eval(Source(p))[None], mean, std)[0], ref_eval(Image.open(p).convert("RGB"))
        assert a.shape == b.shape == (3, 224, 224)
        assert (a - b).abs().mean() < 0.02  # under 1/255 of the range on average
