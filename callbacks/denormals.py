"""Flush subnormal floats to zero on the CPU while the trainer runs (FTZ/DAZ): |x| < 2⁻¹²⁶ ≈ 1.2e-38 → 0.

A subnormal operand sends x86 arithmetic down a microcode path many times slower. Gradients reach that range
now and then: training resnet18 at 64×64 on a 2-core CPU, one step in 16 had 14,000 subnormal values in the
gradient flowing into layer4's last convolution, and its backward pass took 0.6 s instead of 0.3 s; which steps
hit it depends on the run's seed. Values that small change no update of a float32 or bf16 network, so flushing
them loses nothing; TensorFlow and XLA run their CPU kernels this way by default.

The mode is a per-thread register that new threads copy from the one that starts them: set before the first
parallel op, as ``zoo`` does before building the model, it reaches every intra-op thread; set later (a Python
``Trainer.fit``), the training thread only.
"""

from __future__ import annotations

import contextlib

import torch
from lightning.pytorch.callbacks import Callback

_SUBNORMAL = 1e-40  # below float32's smallest normal number


def flushing() -> bool:
    """Whether this thread's float arithmetic flushes subnormals to zero now."""
    return (torch.tensor(1e-30) * (_SUBNORMAL / 1e-30)).item() == 0.0


def flush_denormals(on: bool) -> bool:
    """Turn the flush on or off for this thread (and the threads it starts later); returns the previous mode.
    A CPU without the mode (not x86 with SSE) keeps its arithmetic as it is."""
    before = flushing()
    torch.set_flush_denormal(on)
    return before


@contextlib.contextmanager
def denormal_mode(on: bool | None = None):
    """Flush (``on``: True) or not (False) inside the block, or leave the mode as it is (None); the mode of
    before comes back at its end, whatever the block set."""
    before = flushing() if on is None else flush_denormals(on)
    try:
        yield
    finally:
        flush_denormals(before)


class FlushDenormals(Callback):
    """During each stage (fit, validate, test, predict), CPU arithmetic flushes subnormal floats to zero; the
    previous mode comes back at the end of the stage.

    Args:
        flush: flush subnormal floats (|x| < 1.2e-38) to zero on the CPU; false: IEEE arithmetic, which slows a
            step down whenever gradients underflow.
    """

    def __init__(self, flush: bool = True) -> None:
        self.flush = flush
        self._before: bool | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.flush:
            self._before = flush_denormals(True)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._before is not None:
            flush_denormals(self._before)
            self._before = None
