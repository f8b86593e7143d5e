"""TopKAccuracy counts what torchmetrics' micro-averaged MulticlassAccuracy counts."""

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy

from zoo.training.metrics import TopKAccuracy
from zoo.training.module import accuracy


@pytest.mark.parametrize("k", [1, 3, 5])
def test_equals_torchmetrics_micro_accuracy_over_several_batches(k):
    gen = torch.Generator().manual_seed(k)
    ours, reference = TopKAccuracy(k), MulticlassAccuracy(10, top_k=k, average="micro")
    for n in (64, 17, 1):
        scores, target = torch.randn(n, 10, generator=gen), torch.randint(0, 10, (n,), generator=gen)
        ours.update(scores, target)
        reference.update(scores, target)
    assert 0 < float(ours.compute()) < 1
    assert float(ours.compute()) == pytest.approx(float(reference.compute()), abs=1e-7)
    ours.reset()
    assert int(ours.total) == 0


def test_counts_a_hit_only_among_the_k_highest_scores():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]])
    top1, top2 = TopKAccuracy(1), TopKAccuracy(2)
    for metric in (top1, top2):
        metric.update(scores, torch.tensor([2, 0]))
    assert float(top1.compute()) == 0.5  # the first image's label is second best
    assert float(top2.compute()) == 1.0


def test_k_above_the_classes_counts_every_image():
    metric = accuracy(num_classes=3, k=5)
    metric.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
    assert float(metric.compute()) == 1.0


def test_k_below_one_is_refused():
    with pytest.raises(ValueError, match="k ≥ 1"):
        TopKAccuracy(0)
