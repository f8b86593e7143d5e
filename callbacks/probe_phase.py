"""The linear probe as a phase of its own, before the first training epoch: the frozen backbone runs once over the
training and validation images (in eval mode, on every process's share), the head is fitted to convergence on
rank 0 (:mod:`zoo.training.probe`) and broadcast, and its validation scores come from the same features. No epoch, no
optimizer step, no second pass over the validation images.

What the phase needs of the model and the data is :class:`zoo.protocols.FineTunable` and
:class:`zoo.protocols.FeatureData`; :class:`callbacks.finetuning.FineTuning` decides when it runs and what follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
import torch

from zoo.protocols import FeatureData, FineTunable
from zoo.training.probe import TOP, ProbeFit, StageChoice, fit_head, fit_stages


@dataclass
class Features:
    """Pooled feature blocks of a split (name → N×D, ``top`` first), their labels and the images' positions in
    the split (a position repeats once per view)."""

    blocks: dict[str, np.ndarray]
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ProbeResult:
    """The probe's fit on the top features, its validation scores, and what it was fitted on."""

    fit: ProbeFit
    train: Features
    val: Features | None
    val_top1: float | None  # on the validation split (None without one)
    val_loss: float | None
    images: int  # training images (each seen ``views`` times)


# the plain (eval) features a single-process run computed before any step, by network: the label check's pass in
# the set-up serves the probe's (both run the same eval preprocessing over the same images)
_SEEN: WeakKeyDictionary = WeakKeyDictionary()


def split_features(
    trainer,
    module: FineTunable,
    data: FeatureData,
    split: str,
    blocks: list[str],
    indices: np.ndarray | None = None,
    augment: bool = False,
    alone: bool = False,
) -> Features:
    """The ``blocks`` of every image of ``split`` (or those at ``indices``), each process running the backbone over
    its share, gathered in image order on every process (``alone``: this process over every image, no
    collective). A single-process run reuses the plain features of the same split, network and blocks computed
    earlier in the run (the label check's), as long as the split's labels are the same."""
    single = trainer.world_size == 1 or alone
    if single and not augment:
        seen = _SEEN.get(module, {}).get(split)
        if (
            seen is not None
            and set(blocks) <= set(seen.blocks)
            and seen.labels.tolist() == data.split_targets(split)
        ):
            keep = np.arange(len(seen)) if indices is None else np.asarray(indices)
            return Features({n: seen.blocks[n][keep] for n in blocks}, seen.labels[keep], keep)
    rank, world = (0, 1) if alone else (trainer.global_rank, trainer.world_size)
    loader = data.feature_dataloader(split, augment=augment, rank=rank, world_size=world, indices=indices)
    caught: list[list[torch.Tensor]] = [[] for _ in blocks]
    labels = []
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        for batch in loader:
            x, y = trainer.strategy.batch_to_device(batch)
            for store, block in zip(caught, module.probe_features(x, blocks)):
                store.append(block.detach().float().flatten(1).cpu())
            labels.append(torch.as_tensor(y).cpu())
    arrays = [torch.cat(c).numpy() if c else np.zeros((0, 0), np.float32) for c in caught]
    y = torch.cat(labels).numpy().astype(np.int64) if labels else np.zeros(0, np.int64)
    ids = np.asarray(loader.dataset.indices, dtype=np.int64)
    if world > 1:
        arrays, y, ids = [gather(trainer, a) for a in arrays], gather(trainer, y), gather(trainer, ids)
    order = np.argsort(ids, kind="stable")
    found = Features({n: a[order] for n, a in zip(blocks, arrays)}, y[order], ids[order])
    if single and not augment and indices is None:
        _SEEN.setdefault(module, {})[split] = found
    return found


def run_probe(
    trainer,
    module: FineTunable,
    data: FeatureData,
    train_indices: np.ndarray,
    views: int = 1,
    Cs=None,
    folds: int = 5,
    taps: list[str] | None = None,
) -> ProbeResult:
    """Features of the training images at ``train_indices`` (``views`` passes: the plain one, then augmented) and
    of the validation split, with the stage blocks ``taps`` beside the top features; the head fitted on the top
    features (rank 0, then broadcast) and loaded. The network is left in eval mode's state as it was."""
    blocks = [TOP, *(taps or [])]
    was_training = module.training
    module.eval()
    try:
        passes = [
            split_features(trainer, module, data, "train", blocks, train_indices, v > 0) for v in range(views)
        ]
        val = split_features(trainer, module, data, "val", blocks) if data.has_split("val") else None
    finally:
        module.train(was_training)
    train = Features(
        {n: np.concatenate([p.blocks[n] for p in passes]) for n in blocks},
        np.concatenate([p.labels for p in passes]),
        np.concatenate([p.ids for p in passes]),
    )
    fit = None
    if trainer.is_global_zero:
        vx, vy = (val.blocks[TOP], val.labels) if val is not None and len(val) else (None, None)
        options = {"Cs": Cs} if Cs else {}
        fit = fit_head(
            train.blocks[TOP], train.labels, module.num_classes, vx, vy, train.ids, folds=folds, **options
        )
    fit = trainer.strategy.broadcast(fit, src=0)  # every rank loads the same head
    module.load_probe(fit)
    top1, loss = (None, None)
    if val is not None and len(val):
        top1, loss = scores(fit, val.blocks[TOP], val.labels)
    return ProbeResult(fit, train, val, top1, loss, len(train_indices))


def choose_stages(trainer, module: FineTunable, probe: ProbeResult, Cs=None, folds: int = 5) -> StageChoice:
    """The stage set the final probe reads (:func:`zoo.training.probe.fit_stages` on the features the probe phase kept),
    chosen on rank 0 and broadcast; a set other than the top features alone is installed in the network."""
    choice = None
    if trainer.is_global_zero:
        val = probe.val if probe.val is not None and len(probe.val) else None
        options = {"Cs": Cs} if Cs else {}
        choice = fit_stages(
            probe.train.blocks,
            probe.train.labels,
            module.num_classes,
            val.blocks if val else None,
            val.labels if val else None,
            groups=probe.train.ids,
            folds=folds,
            **options,
        )
    choice = trainer.strategy.broadcast(choice, src=0)
    if choice.stages != (TOP,):
        module.use_stages(list(choice.stages), choice.fit)
    return choice


def scores(fit: ProbeFit, features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(top-1, mean cross-entropy) of the fitted head on ``features``: what a validation pass would log."""
    logits = torch.as_tensor(features, dtype=torch.float64) @ torch.as_tensor(fit.weight).T + torch.as_tensor(
        fit.bias
    )
    target = torch.as_tensor(labels)
    top1 = float((logits.argmax(1) == target).double().mean())
    loss = float(torch.nn.functional.cross_entropy(logits, target))
    return top1, loss


def gather(trainer, array: np.ndarray) -> np.ndarray:
    """Rows of ``array`` from every rank (ranks may hold different numbers of rows)."""
    strategy = trainer.strategy
    device = strategy.root_device
    t = torch.as_tensor(array, device=device)
    sizes = strategy.all_gather(torch.tensor([len(t)], device=device)).flatten().tolist()
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[: len(t)] = t
    everyone = strategy.all_gather(padded)
    return torch.cat([everyone[r, :n] for r, n in enumerate(sizes)]).cpu().numpy()
