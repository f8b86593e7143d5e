"""The trainer's profiler when none is asked for: Lightning's pass-through one, without its cost per call."""

from __future__ import annotations

from contextlib import nullcontext

from lightning.pytorch.profilers import PassThroughProfiler

_NOTHING = nullcontext()


class NoProfiler(PassThroughProfiler):
    """Profiles nothing, as ``PassThroughProfiler``, whose ``profile`` builds a generator-based context manager
    at every call (~1 µs). Lightning enters one around every hook of every callback, ~140 per training step
    with the zoo's callbacks; this returns one shared ``nullcontext`` instead (~0.2 µs)."""

    def profile(self, action_name: str) -> nullcontext:
        return _NOTHING
