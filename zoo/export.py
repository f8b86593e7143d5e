"""Export a trained classifier for deployment: ONNX (for onnxruntime) or a ``torch.export`` program (``.pt2``).

The exported graph is the network in eval mode, logits = f(x) for x of shape N×C×H×W with N free (a dynamic
batch dimension); a deployer applies softmax, p_k = exp(z_k) / Σ_j exp(z_j). torch's own exporters do the work
(``torch.onnx.export`` with the dynamo exporter, ``torch.export.export``); what this module adds is what they
lack: the preprocessing and class names the checkpoint was trained with, stored with the graph (ONNX
``metadata_props``, or a JSON beside the ``.pt2``, each value JSON text), and the check of the result,
max |f_exported(x) − f_checkpoint(x)| over real inputs.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMATS = ("onnx", "pt2")
DEFAULT_OPSET = 18  # the dynamo exporter's lowest; onnxruntime ≥ 1.14 runs it
PREPROCESS_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(ValueError):
    """A user's mistake (missing or foreign checkpoint, unknown format): one line, no traceback."""


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def load_checkpoint(path: str | Path, weights_only: bool = True) -> dict:
    """The Lightning checkpoint at ``path`` (``torch.load(weights_only=...)``), or an error naming the file."""
    from zoo.ensemble import read_checkpoint

    try:
        return read_checkpoint(path, weights_only)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(str(err).replace("--no-weights-only", "--weights_only false")) from None


def network(ckpt: dict, source: str = "checkpoint") -> nn.Module:
    """The checkpoint's network (``ImageClassifier.model``) with its weights, in eval mode, built from the
    checkpoint's own hyper-parameters (no pretrained download, no channels-last or compile switches)."""
    from zoo.ensemble import check_fits
    from zoo.module import ImageClassifier

    hparams = dict(ckpt.get("hyper_parameters") or {})
    if "arch" not in hparams:
        raise ExportError(
            f"{source} is not a zoo ImageClassifier checkpoint: its hyper-parameters have no 'arch'"
        )
    accepted = inspect.signature(ImageClassifier.__init__).parameters
    options = {k: v for k, v in hparams.items() if k in accepted}
    options.update(pretrained=False, pretrained_path=None, channels_last=False, compile=False)
    classifier = ImageClassifier(**options)
    try:
        check_fits(classifier, ckpt["state_dict"], source, hparams.get("arch"))
    except ValueError as err:
        raise ExportError(str(err)) from None
    classifier.load_state_dict(ckpt["state_dict"])
    return classifier.model.eval()


def datamodule_state(ckpt: dict) -> dict:
    """The data module's saved state (``ImageDataModule.state_dict``: ``config``, ``class_names``), or {}.
    Lightning stores it under the data module's class name."""
    for key, value in ckpt.items():
        if isinstance(value, dict) and "class_names" in value and "config" in value and key[:1].isupper():
            return value
    return {}


def preprocessing(ckpt: dict) -> dict:
    """The eval preprocessing the checkpoint was trained with (timm data-config keys), or {} if not saved."""
    config = datamodule_state(ckpt).get("config") or {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k in PREPROCESS_KEYS}


def class_names(ckpt: dict, fallback: Sequence[str] | None = None) -> list[str] | None:
    """Class names in label order: the data module's state, its hyper-parameters, else ``fallback``."""
    names = datamodule_state(ckpt).get("class_names")
    names = names or (ckpt.get("datamodule_hyper_parameters") or {}).get("class_names") or fallback
    return [str(n) for n in names] if names else None


def metadata(ckpt: dict, input_size: Sequence[int], names: Sequence[str] | None = None) -> dict[str, Any]:
    """What a deployer needs beside the graph: input size, preprocessing, class names, model and output."""
    hparams = ckpt.get("hyper_parameters") or {}
    meta: dict[str, Any] = {"input_size": [int(s) for s in input_size]}
    meta.update({k: v for k, v in preprocessing(ckpt).items() if k != "input_size"})
    names = class_names(ckpt, names)
    if names:
        meta["class_names"] = names
    meta.update(
        num_classes=int(hparams.get("num_classes", 0)) or None,
        arch=hparams.get("arch"),
        input_name=INPUT_NAME,
        output=f"{OUTPUT_NAME} (N×num_classes); probabilities = softmax over the last axis",
    )
    return {k: v for k, v in meta.items() if v is not None}


def _batch_dim():
    return {0: torch.export.Dim("batch", min=1)}


def export_onnx(
    net: nn.Module, example: torch.Tensor, path: str | Path, meta: dict, opset: int = DEFAULT_OPSET
) -> Path:
    """Write ``net`` as ONNX (input ``input``, output ``logits``, dynamic batch) with ``meta`` as metadata_props."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        net.eval(),
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=(_batch_dim(),),
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    program.model.metadata_props.update({k: json.dumps(v) for k, v in {**meta, "opset": opset}.items()})
    program.save(str(path))
    return path


def metadata_path(path: str | Path) -> Path:
    """The JSON beside a ``.pt2`` program: ``model.pt2`` → ``model.json``."""
    return Path(path).with_suffix(".json")


def export_pt2(net: nn.Module, example: torch.Tensor, path: str | Path, meta: dict) -> Path:
    """Write ``torch.export.export(net)`` (dynamic batch) to ``path`` and ``meta`` to the JSON beside it
    (also inside the archive as ``metadata.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.export.export(net.eval(), (example,), dynamic_shapes=(_batch_dim(),))
    text = json.dumps(meta, indent=2) + "\n"
    torch.export.save(program, str(path), extra_files={"metadata.json": text})
    metadata_path(path).write_text(text)
    return path


def export(net: nn.Module, fmt: str, path: str | Path, meta: dict, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``net`` in format ``fmt`` (``onnx`` or ``pt2``) for inputs of ``meta['input_size']``."""
    example = torch.randn(2, *meta["input_size"])  # batch 2: 1 would be specialised, not left free
    if check_format(fmt) == "onnx":
        return export_onnx(net, example, path, meta, opset)
    return export_pt2(net, example, path, meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported file, values decoded from JSON."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {p.key: json.loads(p.value) for p in model.metadata_props}
    return json.loads(metadata_path(path).read_text())


def run_exported(path: str | Path, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The exported model's logits for the batch ``x`` (onnxruntime for ``.onnx``, else ``torch.export.load``)."""
    path = Path(path)
    x = torch.as_tensor(x, dtype=torch.float32)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {INPUT_NAME: x.numpy()})[0]
    with torch.no_grad():
        return torch.export.load(str(path)).module()(x).numpy()


def max_difference(net: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """max |f_exported(x) − f(x)| over the batch ``x``: how far the exported file is from the checkpoint."""
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    return float(np.abs(run_exported(path, x) - expected).max())
