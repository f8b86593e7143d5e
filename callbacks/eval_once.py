"""Under DDP, each validation and test image is evaluated once, so the metrics are those of the split.

Lightning gives an evaluation loader torch's ``DistributedSampler``, which pads every process's share with
images of the others until all have the same count: with N images on W processes, ⌈N/W⌉·W are scored, and the
repeated ones count twice in the metrics that torchmetrics sums over the processes (Lightning warns about it in
``validate`` and ``test``). This callback gives the data module's validation and test loaders Lightning's own
``UnrepeatedDistributedSampler`` instead (process r scores images r, r + W, r + 2W, ...; the shares differ by at
most one image), as Lightning does for ``predict``. That is safe for evaluation: its steps hold no collective,
and the metrics synchronise once, at the epoch's end. Written by hand because Lightning has no switch for it.
"""

from __future__ import annotations

import functools
from collections.abc import Sized

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler


def unrepeated(loader, num_replicas: int, rank: int):
    """``loader`` (a plain ``DataLoader`` over a sized dataset, in order) with an ``UnrepeatedDistributedSampler``;
    any other loader as it is (Lightning then distributes it its own way)."""
    if (
        type(loader) is not DataLoader
        or isinstance(loader.sampler, DistributedSampler)
        or loader.batch_size is None
        or not isinstance(loader.dataset, Sized)
        or len(loader.dataset) < num_replicas  # every process needs an image
    ):
        return loader
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=UnrepeatedDistributedSampler(
            loader.dataset, num_replicas=num_replicas, rank=rank, shuffle=False
        ),
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if workers else None,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device,
    )


class EvaluateOnce(Callback):
    """Wraps the data module's ``val_dataloader`` and ``test_dataloader`` so that, with several processes, each
    loader they return counts each image once (:func:`unrepeated`). One process: nothing changes."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        datamodule = trainer.datamodule
        if trainer.world_size < 2 or datamodule is None or getattr(datamodule, "_zoo_eval_once", False):
            return
        kwargs = trainer.distributed_sampler_kwargs or {}
        replicas, rank = (
            kwargs.get("num_replicas", trainer.world_size),
            kwargs.get("rank", trainer.global_rank),
        )
        for name in ("val_dataloader", "test_dataloader"):
            method = getattr(datamodule, name, None)
            if method is not None:
                setattr(datamodule, name, _once(method, replicas, rank))
        datamodule._zoo_eval_once = True


def whole_split(method):
    """The data module's loader method as it was before :class:`EvaluateOnce` gave it this process's share:
    for a pass over the whole split by one process (rank 0 scoring the snapshots)."""
    return getattr(method, "__wrapped__", method)


def _once(method, replicas: int, rank: int):
    @functools.wraps(method)
    def loaders():
        out = method()
        if isinstance(out, (list, tuple)):
            return type(out)(unrepeated(loader, replicas, rank) for loader in out)
        if isinstance(out, dict):
            return {key: unrepeated(loader, replicas, rank) for key, loader in out.items()}
        return unrepeated(out, replicas, rank)

    return loaders
