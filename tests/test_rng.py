"""The generators' states round-trip through a weights-only checkpoint, in the current and the older format."""

import io
import random

import numpy as np
import torch

from zoo.runtime.rng import rng_states, set_rng_states


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_states_round_trip_through_a_weights_only_checkpoint():
    states = rng_states()
    expected = draws()
    buffer = io.BytesIO()
    torch.save({"rng": states}, buffer)
    buffer.seek(0)
    set_rng_states(torch.load(buffer, weights_only=True)["rng"])
    assert draws() == expected


def test_the_twisters_words_are_tensors_not_tuples_of_ints():
    states = rng_states()
    assert torch.is_tensor(states["numpy"][1]) and states["numpy"][1].numel() == 624
    assert torch.is_tensor(states["python"][1]) and states["python"][1].numel() == 625


def test_states_saved_as_lists_of_ints_still_load():
    states = rng_states()
    expected = draws()
    old = {**states, "numpy": [*states["numpy"]], "python": states["python"]}
    old["numpy"][1] = states["numpy"][1].tolist()
    old["python"] = (states["python"][0], tuple(states["python"][1].tolist()), states["python"][2])
    set_rng_states(old)
    assert draws() == expected
