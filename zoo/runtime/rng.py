"""The process's random number generators (torch, CUDA, NumPy, Python): read, set, and seed for one sample.

Lightning collects the same states (``lightning.fabric.utilities.seed._collect_rng_states``) but keeps NumPy's as
an array, which ``torch.load(weights_only=True)`` refuses; here every state is a tensor or plain Python values,
so a checkpoint holding them still loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def rng_states() -> dict:
    """The states of torch's CPU generator, every CUDA device's (if initialised), NumPy's and Python's. The two
    Mersenne twisters' 624 words are int64 tensors, not tuples of ints: a checkpoint pickles one object, not 625."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": (version, torch.tensor(internal, dtype=torch.int64), gauss_next),
    }
    if torch.cuda.is_initialized():  # (is_available asks the driver each time: ~0.3 ms)
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Put back what :func:`rng_states` returned (CUDA states only where this process has CUDA)."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    keys = keys.numpy() if torch.is_tensor(keys) else keys  # a list in checkpoints from before the tensors
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate(
        (version, tuple(internal.tolist() if torch.is_tensor(internal) else internal), gauss_next)
    )
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for sample ``index`` in epoch ``epoch`` of a run seeded ``seed`` (NumPy's ``SeedSequence``)."""
    low, high = np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32)
    return int(high) << 32 | int(low)


def seed_all(seed: int) -> None:
    """Seed torch's CPU generator (CUDA's draw the model's dropout), NumPy's and Python's with ``seed``."""
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed & 0xFFFF_FFFF)
    random.seed(seed)


@contextmanager
def kept_states() -> Iterator[None]:
    """The states of torch's CPU generator, NumPy's and Python's after the block are those before it."""
    saved = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    try:
        yield
    finally:
        torch.set_rng_state(saved["torch"])
        np.random.set_state(saved["numpy"])
        random.setstate(saved["python"])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, NumPy and Python with ``seed`` inside the block; the states before it come back after it."""
    with kept_states():
        seed_all(seed)
        yield
