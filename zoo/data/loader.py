"""Training loaders that resume exactly: the position inside the epoch, and the same augmentation after a kill.

Three parts, each on a library class:

- ``EpochSampler`` (torchdata's ``StatefulDistributedSampler``): the order of epoch e is a function of
  (seed, e) only, as in torch's ``DistributedSampler`` (shared by the ranks of a DDP run), and the sampler's
  state (seed, epoch, samples yielded) says where in it training stands. It yields ``(index, epoch, seed)``.
- ``SeededSamples``: sample i of epoch e is read and augmented with torch, NumPy and Python seeded by
  ``sample_seed(seed, e, i)`` (a dataset that augments a whole batch at once: the batch, by its indices), so
  its random crop or flip is the same in any worker, with any number of workers, before or after a resume. Why not save each worker's generators instead: a worker's stream depends
  on which batches it was given, which changes with ``num_workers`` and with where the epoch was cut.
- ``ResumableLoader`` (torchdata's ``StatefulDataLoader``): Lightning saves its ``state_dict()`` in every
  checkpoint (``loops.fit_loop.state_dict.combined_loader``) and restores it on ``--ckpt_path``; torchdata
  counts the batches handed to the trainer, not those its workers prefetched.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

from zoo import compat
from zoo.data.tensor import collate
from zoo.runtime.rng import kept_states, sample_seed, seed_all, seeded

MARK = "zoo.EpochSampler"  # names the sampler's state inside the loader's
YIELDED = compat.sampler_position_key()  # torchdata's key of the samples yielded so far in the epoch


def run_seed() -> int:
    """The run's seed, as Lightning's own distributed sampler takes it (``seed_everything`` sets it)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class EpochSampler(StatefulDistributedSampler):
    """Epoch e's order: a permutation drawn from seed + e (``shuffle``), else 0..N−1; with ``weights``, N draws
    with replacement, P(i) ∝ w_i, from the same seed. Each DDP rank takes every world-th sample of it.

    Lightning sets the epoch (``set_epoch``) before each epoch; the state also holds it, so a restored loader
    knows its epoch before its workers start prefetching.
    """

    def __init__(
        self,
        dataset: Dataset,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        weights: torch.Tensor | None = None,
    ):
        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
        shuffle = shuffle and weights is None
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.epoch = epoch
        self.weights = weights

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch, seed, draws = self.epoch, self.seed, None
        if self.weights is not None:  # i.i.d. draws, indexed by the positions 0..N−1 the ranks share out
            g = torch.Generator().manual_seed(seed + epoch)
            draws = torch.multinomial(self.weights, len(self.weights), True, generator=g).tolist()
        for position in super().__iter__():  # DistributedSampler's order, from `yielded` on
            yield (position if draws is None else draws[position]), epoch, seed

    def state_dict(self) -> dict:
        return {MARK: True, "seed": self.seed, "epoch": self.epoch, YIELDED: self.yielded}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.seed, self.epoch = state_dict["seed"], state_dict["epoch"]


def next_epoch(state):
    """``state`` (a loader's, or any structure holding one) with every ``EpochSampler`` position moved to the start
    of the next epoch: a checkpoint written after the epoch's last batch resumes with a whole new epoch."""
    if isinstance(state, dict):
        if state.get(MARK):
            return {**state, "epoch": state["epoch"] + 1, YIELDED: 0}
        return {key: next_epoch(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(next_epoch(value) for value in state)
    return state


def _sampler_state(state):
    """The ``EpochSampler`` state inside a loader's state, or None."""
    if isinstance(state, dict):
        if state.get(MARK):
            return state
        state = list(state.values())
    for value in state if isinstance(state, (list, tuple)) else ():
        if (found := _sampler_state(value)) is not None:
            return found
    return None


class SeededSamples(Dataset):
    """``dataset[i]`` for the key ``(i, e, seed)``, read with every generator seeded by ``sample_seed(seed, e, i)``;
    the caller's generators are left as they were (the main process's draw the model's dropout)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int] | int):
        if not isinstance(key, tuple):  # a plain index from another sampler (Lightning's overfit_batches)
            return self.dataset[key]
        index, epoch, seed = key
        with seeded(sample_seed(seed, epoch, index)):
            return self.dataset[index]

    def __getitems__(self, keys: list) -> list:
        """A batch (torch's fetcher calls this when it exists). A dataset that reads a batch in one go (its
        ``batched`` attribute) gets one seed per batch, ``sample_seed(seed, e, hash of the batch's indices)``;
        the batch's samples and their order come from the sampler, so that seed too is the same in any worker
        and after a resume. Otherwise each sample is seeded as ``__getitem__`` seeds it. The generators are
        saved and put back once per batch (NumPy's get_state + set_state cost ~110 µs)."""
        with kept_states():
            if getattr(self.dataset, "batched", False) and all(isinstance(k, tuple) for k in keys):
                indices = [index for index, _, _ in keys]
                _, epoch, seed = keys[0]
                seed_all(sample_seed(seed, epoch, hash(tuple(indices)) & 0xFFFF_FFFF_FFFF_FFFF))
                return self.dataset.__getitems__(indices)
            out = []
            for key in keys:
                if isinstance(key, tuple):
                    index, epoch, seed = key
                    seed_all(sample_seed(seed, epoch, index))
                    key = index
                out.append(self.dataset[key])
            return out


class ResumableLoader(StatefulDataLoader):
    """torchdata's ``StatefulDataLoader``; a state saved with another ``num_workers`` keeps the sampler's position
    (torchdata's own restore needs the same number of workers)."""

    def __init__(self, *args, **kwargs):
        with warnings.catch_warnings():  # torchdata 0.11 calls torch.set_vital, deprecated in torch
            warnings.filterwarnings("ignore", message=".*set_vital.*")
            super().__init__(*args, **kwargs)

    def load_state_dict(self, state_dict: dict) -> None:
        saved = compat.loader_state_workers(state_dict)
        position = _sampler_state(state_dict)
        if saved != self.num_workers and position is not None and isinstance(self.sampler, EpochSampler):
            rank_zero_info(
                f"Resuming the training data with {self.num_workers} loader workers (the checkpoint had {saved}): "
                f"epoch {position['epoch']}, from sample {position[YIELDED]}"
            )
            self.sampler.load_state_dict(position)
            state_dict = {}
        super().load_state_dict(state_dict)


def _epoch_to_come(trainer) -> int:
    """The epoch Lightning passes to ``set_epoch`` next: its count of finished epochs. Workers start prefetching
    before that call, and a run resumed from a checkpoint written at an epoch's end gets no saved loader state
    from Lightning (it restores one only mid-epoch), so the sampler must start from this epoch itself."""
    if trainer is None:
        return 0
    loop = getattr(trainer, "fit_loop", None)
    return loop.epoch_progress.current.processed if loop is not None else trainer.current_epoch


def train_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    *,
    trainer=None,
    weights: torch.Tensor | None = None,
    drop_last: bool = False,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = True,
) -> ResumableLoader:
    """A shuffling loader of ``dataset`` that resumes exactly (see the module docstring); ``weights``: draw
    sample i with probability ∝ w_i instead of shuffling; ``collate_fn`` None: :func:`zoo.data.tensor.collate`."""
    seed = run_seed()
    sampler = EpochSampler(dataset, seed=seed, epoch=_epoch_to_come(trainer), weights=weights)
    return ResumableLoader(
        SeededSamples(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=persistent_workers and num_workers > 0,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=collate_fn or collate,
        # the iterators' worker seeds come from here, not from the generator that draws the model's dropout
        generator=torch.Generator().manual_seed(seed),
    )


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    *,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = True,
) -> DataLoader:
    """A loader of ``dataset`` in order (validation, test, predict), drawing nothing from the global generators;
    ``collate_fn`` None: :func:`zoo.data.tensor.collate`."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=persistent_workers and num_workers > 0,
        pin_memory=pin_memory,
        collate_fn=collate_fn or collate,
        generator=torch.Generator().manual_seed(run_seed()),
    )
