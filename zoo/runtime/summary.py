"""Per-layer output shapes, parameters and multiply-accumulates (MACs), with the lectures' conv arithmetic.

The conv arithmetic is the Waterloo CS489/698 lecture's (docs/notes.md): W2 = (W1 − F + 2P)/S + 1 and
F·F·D1·K weights + K biases per layer.

Lightning's ``ModelSummary`` counts parameters but neither MACs nor whether a layer's stride fits its input,
and torch floors a non-integer output size silently; so a forward pass with hooks records each leaf layer's
shapes here, and each conv or pooling layer is checked against W2 = (W1 − F + 2P)/S + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

_WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass
class Layer:
    """One call of a leaf module: its output shape (no batch dimension), own parameters and MACs."""

    name: str
    kind: str
    output: tuple[int, ...]
    params: int
    macs: int
    note: str = ""


@dataclass
class Summary:
    layers: list[Layer]
    input_size: tuple[int, ...]
    output: tuple[int, ...]
    params: int
    trainable: int
    macs: int = field(init=False)

    def __post_init__(self):
        self.macs = sum(layer.macs for layer in self.layers)

    @property
    def misfits(self) -> list[Layer]:
        """Layers whose (W1 − F + 2P)/S + 1 is not an integer (torch floors it)."""
        return [layer for layer in self.layers if layer.note]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def output_size(w1: int, f: int, p: int = 0, s: int = 1, d: int = 1) -> float:
    """W2 = (W1 − F + 2P)/S + 1, with a dilated filter spanning d·(F − 1) + 1 pixels; not rounded."""
    return (w1 - (d * (f - 1) + 1) + 2 * p) / s + 1


def fit_note(module: nn.Module, in_hw: tuple[int, int]) -> str:
    """'' when the layer's stride fits its input exactly, else the arithmetic and what torch does instead."""
    if not isinstance(module, _WINDOWED):
        return ""
    ks, ss, ps = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding)
    ds = _pair(getattr(module, "dilation", 1))
    ceil = getattr(module, "ceil_mode", False)
    notes = []
    for axis, w1, f, s, p, d in zip("HW", in_hw, ks, ss, ps, ds):
        w2 = output_size(w1, f, p, s, d)
        if w2 != int(w2):
            span = f"{d}·({f} − 1) + 1" if d > 1 else f"{f}"
            done = math.ceil(w2) if ceil else math.floor(w2)
            notes.append(f"{axis}: ({w1} − {span} + 2·{p})/{s} + 1 = {w2:.2f} → {done}")
    if len(notes) == 2 and notes[0][3:] == notes[1][3:]:
        notes = [f"H, W{notes[0][1:]}"]
    return "; ".join(notes)


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    """Conv: F·F·(D1/groups)·K per output pixel, i.e. weight size × H2·W2; linear: D_in·D_out per row."""
    if isinstance(module, nn.Conv2d):
        return module.weight.numel() * out.shape[-1] * out.shape[-2]
    if isinstance(module, nn.Linear):
        return module.weight.numel() * math.prod(out.shape[1:-1])
    return 0


def summarize(model: nn.Module, input_size: tuple[int, ...] = (3, 224, 224), device=None) -> Summary:
    """Run one input of ``input_size`` (C, H, W) through ``model`` in eval mode and record every layer.

    ``device="meta"`` runs shapes only (no arithmetic, no memory): build the model under
    ``torch.device("meta")`` for that, as ``zoo summary`` does.
    """
    device = device or next(model.parameters(), torch.empty(0)).device
    layers: list[Layer] = []
    names = {m: n for n, m in model.named_modules()}
    calls: dict[str, int] = {}

    def hook(module, inputs, out):
        if not isinstance(out, torch.Tensor):
            return
        name = names[module] or type(module).__name__
        calls[name] = calls.get(name, 0) + 1
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        note = fit_note(module, tuple(x.shape[-2:])) if x is not None and x.ndim == 4 else ""
        params = sum(p.numel() for p in module.parameters(recurse=False)) if calls[name] == 1 else 0
        label = name if calls[name] == 1 else f"{name} (call {calls[name]})"
        layers.append(
            Layer(label, type(module).__name__, tuple(out.shape[1:]), params, _macs(module, out), note)
        )

    # leaf layers, and containers holding parameters of their own (timm's BatchNormAct2d); a lone layer too
    hooked = [m for m in model.modules() if not list(m.children()) or list(m.parameters(recurse=False))]
    handles = [m.register_forward_hook(hook) for m in hooked]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, *input_size, device=device))
    except RuntimeError as err:
        raise ValueError(f"a {'×'.join(map(str, input_size))} input does not fit this model: {err}") from err
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    counted = sum(layer.params for layer in layers)
    total = sum(p.numel() for p in model.parameters())
    if total != counted:  # parameters used outside a hooked forward (e.g. a ViT's position embedding)
        layers.append(Layer("(other parameters)", "", (), total - counted, 0))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    output = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
    return Summary(layers, tuple(input_size), output, total, trainable)


def group_layers(summary: Summary, depth: int) -> list[Layer]:
    """Rows merged to module-name depth ``depth`` (``layer1.0`` at depth 2): sums, last output, notes kept."""
    rows: dict[str, Layer] = {}
    for layer in summary.layers:
        key = ".".join(layer.name.split(" ")[0].split(".")[:depth])
        row = rows.setdefault(key, Layer(key, layer.kind, layer.output, 0, 0))
        row.params, row.macs, row.output = row.params + layer.params, row.macs + layer.macs, layer.output
        if row.kind != layer.kind:
            row.kind = "…"
        if layer.note:
            note = layer.note if layer.name == key else f"{layer.name}: {layer.note}"
            row.note = "; ".join(filter(None, [row.note, note]))
    return list(rows.values())


class ConvDoesNotFit(ValueError):
    """The lectures' rule: a filter fits only if S divides W1 − F + 2P."""


def conv_arithmetic(in_size: tuple[int, int, int], filters: int, kernel: int, stride: int, pad: int) -> str:
    """The lectures' worked example for one conv layer; raises ``ConvDoesNotFit`` with alternatives if it does not fit."""
    d1, h1, w1 = in_size
    lines = []
    for axis, n in (("W2", w1), ("H2", h1)):
        n2 = output_size(n, kernel, pad, stride)
        if n2 != int(n2):
            fits = [s for s in range(1, kernel + 1) if (n - kernel + 2 * pad) % s == 0]
            pads = [p for p in range(kernel) if (n - kernel + 2 * p) % stride == 0][:3]
            raise ConvDoesNotFit(
                f"does not fit: a {kernel}×{kernel} filter cannot be applied on a {h1}×{w1} input with stride "
                f"{stride} and padding {pad}: {axis} = ({n} − {kernel} + 2·{pad})/{stride} + 1 = {n2:.2f} is not an "
                f"integer (torch would silently floor it to {math.floor(n2)}). Strides that fit with padding "
                f"{pad}: {', '.join(map(str, fits))}; paddings that fit with stride {stride}: "
                f"{', '.join(map(str, pads)) or 'none below F'}."
            )
        lines.append(f"{axis} = ({n} − {kernel} + 2·{pad})/{stride} + 1 = {int(n2)}")
    w2, h2 = int(output_size(w1, kernel, pad, stride)), int(output_size(h1, kernel, pad, stride))
    params = kernel * kernel * d1 * filters + filters
    lines.append(f"D2 = K = {filters}: output volume {w2}×{h2}×{filters}")
    lines.append(f"parameters = F·F·D1·K + K = {kernel}·{kernel}·{d1}·{filters} + {filters} = {params}")
    lines.append(f"MACs = F·F·D1·K·W2·H2 = {kernel * kernel * d1 * filters * w2 * h2:,}")
    return "\n".join(lines)
