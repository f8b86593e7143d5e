"""The batched random shift and the batched read of in-memory images: the same draws torchvision's
``RandomCrop(size, padding=s)`` makes, each image its own, in one call per batch."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from zoo.data import DigitsDataModule
from zoo.data.shift import RandomShift
from zoo.data.tensor import Batch, TensorImageDataset, collate


def offsets(batch: torch.Tensor, out: torch.Tensor, shift: int, unique: bool = True) -> list:
    """The (dy, dx) of each output image as a window of the zero-padded input (asserts there is one; with
    ``unique`` false, the set of all that match: images with zero borders match several)."""
    h, w = batch.shape[-2:]
    found = []
    for image, shifted in zip(batch, out):
        padded = F.pad(image, (shift,) * 4)
        hits = [
            (dy, dx)
            for dy, dx in itertools.product(range(2 * shift + 1), repeat=2)
            if torch.equal(padded[:, dy : dy + h, dx : dx + w], shifted)
        ]
        assert len(hits) == 1 if unique else hits, "not a window of the padded image"
        found.append(hits[0] if unique else set(hits))
    return found


def test_each_image_of_a_batch_gets_its_own_shift_from_the_full_range():
    torch.manual_seed(0)
    batch = torch.rand(400, 3, 6, 7) + 0.1  # no zeros: a shifted window is recognisable by its zero border
    out = RandomShift(1)(batch)
    assert out.shape == batch.shape
    drawn = offsets(batch, out, 1)
    counts = torch.bincount(torch.tensor([3 * dy + dx for dy, dx in drawn]), minlength=9)
    assert (counts > 400 / 9 * 0.5).all(), counts  # all nine offsets, roughly uniform, as RandomCrop draws


def test_a_single_image_and_no_shift():
    image = torch.rand(1, 8, 8) + 0.1
    assert len(offsets(image[None], RandomShift(2)(image)[None], 2)) == 1
    assert RandomShift(0)(image) is image


def test_a_batch_read_in_one_go_equals_the_images_read_one_by_one():
    x, y = torch.rand(10, 1, 8, 8), torch.arange(10)
    data = TensorImageDataset(x, y, normalize=lambda t: (t - 0.5) * 2)
    assert data.batched
    batch = data.__getitems__([3, 1, 7])
    assert isinstance(batch, Batch)
    for got_x, got_y, i in zip(*batch, [3, 1, 7]):
        want_x, want_y = data[i]
        assert torch.equal(got_x, want_x) and int(got_y) == int(want_y)


def test_the_loaders_hand_on_a_batch_read_in_one_go_as_the_samples_would_collate():
    from torch.utils.data import default_collate

    from zoo.data.loader import eval_loader

    x, y = torch.rand(10, 1, 8, 8), torch.arange(10)
    batched = TensorImageDataset(x, y, normalize=lambda t: (t - 0.5) * 2)
    one_by_one = TensorImageDataset(x, y, augment=lambda t: t, normalize=batched.normalize)  # not batched
    assert not one_by_one.batched
    got, want = next(iter(eval_loader(batched, 4))), next(iter(eval_loader(one_by_one, 4)))
    assert isinstance(got, list) and len(got) == 2
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    samples = [batched[i] for i in range(4)]
    assert torch.equal(
        collate(samples)[0], default_collate(samples)[0]
    )  # samples still collate as torch does


def test_the_digits_training_loader_shifts_per_image_and_repeats_a_batch_exactly(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    dm = DigitsDataModule(batch_size=64, normalize="none")
    dm.setup("fit")
    assert dm.splits["train"].batched
    first = next(iter(dm.train_dataloader()))[0]
    again = next(iter(dm.train_dataloader()))[0]
    assert torch.equal(first, again)  # the batch's seed comes from the run's seed, epoch and indices
    keys = list(itertools.islice(iter(dm.train_dataloader().sampler), 64))
    drawn = offsets(dm.splits["train"].x[[k[0] for k in keys]], first, 1, unique=False)
    moved = [(1, 1) not in hits for hits in drawn]
    assert 0 < sum(moved) < 64  # some images shifted, some not: each image drew its own shift
