"""GPU speed switches of a run: channels-last memory order, ``torch.compile``, and what to turn off on a CPU.

bf16 mixed precision and SyncBatchNorm are Lightning's own Trainer options (``precision: bf16-mixed``,
``sync_batchnorm: true``); channels-last and compile act on the network, so they are ``ImageClassifier``
options (``model.channels_last``, ``model.compile``) applied here, the way timm's ``train.py`` applies them.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from torch import nn


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store every 4-D weight as N×H×W×C (``torch.channels_last``): tensor-core convolutions skip transposes."""
    return module.to(memory_format=torch.channels_last)


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """A batch of images N×C×H×W in the same memory order as channels-last weights (other shapes unchanged)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def compile_module(module: nn.Module, options: dict[str, Any] | None = None) -> nn.Module:
    """``torch.compile`` the module in place (``nn.Module.compile``), so its ``state_dict`` keys do not change
    and checkpoints load with or without compiling; ``options`` go to ``torch.compile`` (mode, backend, ...)."""
    options = dict(options or {})
    unknown = sorted(set(options) - {"fullgraph", "dynamic", "backend", "mode", "options", "disable"})
    if unknown:
        raise ValueError(
            f"model.compile_options has unknown key(s) {', '.join(unknown)}; torch.compile takes fullgraph, "
            "dynamic, backend, mode, options, disable"
        )
    module.compile(**options)
    return module


def runs_on_cpu(accelerator: Any) -> bool:
    """Whether Lightning's ``accelerator`` setting resolves to the CPU (``auto`` with no CUDA or MPS device)."""
    name = str(accelerator or "auto").lower()
    if name == "auto":
        return not (CUDAAccelerator.is_available() or MPSAccelerator.is_available())
    return name == "cpu"
