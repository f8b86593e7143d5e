"""A loader's batches as one of the trainer's loops would see them, for callbacks that run a loader themselves.

Lightning's loops move each batch to the device with ``trainer.strategy.batch_to_device``, which also runs the
data module's ``transfer_batch_to_device`` and ``on_after_batch_transfer`` hooks: the zoo's image data modules
send uint8 images and normalise them there, (x / 255 − μ)/σ, and erase patches only while training. A callback
that iterates a loader directly (precise BN, the snapshot ensemble's scores) must do the same, under the stage
whose batches it wants, or it feeds raw uint8 images to the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice

from lightning.pytorch.trainer.states import RunningStage


@contextmanager
def running_stage(trainer, stage: RunningStage) -> Iterator[None]:
    """``trainer.state.stage`` is ``stage`` inside the block and what it was before after it."""
    before = trainer.state.stage
    trainer.state.stage = stage
    try:
        yield
    finally:
        trainer.state.stage = before


def device_batches(trainer, loader: Iterable, stage: RunningStage, limit: int | None = None) -> Iterator:
    """The first ``limit`` (None: all) batches of ``loader`` on the model's device, through the data module's
    transfer hooks as the ``stage`` loop runs them (``TRAINING``: augmented; ``VALIDATING``: not)."""
    for batch in islice(loader, limit):
        with running_stage(trainer, stage):
            batch = trainer.strategy.batch_to_device(batch)
        yield batch
