"""Export a trained classifier for deployment: ONNX (for onnxruntime), a ``torch.export`` program (``.pt2``), or
a timm hub folder (``timm``: config.json, model.safetensors and a model card, see :mod:`zoo.tools.hub_folder`).

The exported graph is the network in eval mode, logits = f(x) for x of shape N×C×H×W with N free (a dynamic
batch dimension); a deployer applies softmax, p_k = exp(z_k) / Σ_j exp(z_j). torch's own exporters do the work
(``torch.onnx.export`` with the dynamo exporter, ``torch.export.export``); what this module adds is what they
lack: the preprocessing and class names the checkpoint was trained with, stored with the graph (ONNX
``metadata_props``, or a JSON beside the ``.pt2``, each value JSON text), and the check of the result,
max |f_exported(x) − f_checkpoint(x)| over real inputs.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMATS = ("onnx", "pt2", "timm")
DEFAULT_OPSET = 18  # the dynamo exporter's lowest; onnxruntime ≥ 1.14 runs it
PREPROCESS_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(ValueError):
    """A user's mistake (missing or foreign checkpoint, unknown format): one line, no traceback."""


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def check_output(path: str | Path, folder: bool = False) -> Path:
    """``path`` can be written: a file (or, with ``folder``, a folder) there, or the nearest folder above it that
    exists, is writable. Checked before the checkpoint is loaded and traced; else one line naming it and why."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and (probe != path or folder) and not probe.is_dir():
        raise ExportError(f"cannot write --output {str(path)!r}: {str(probe)!r} is a file, not a folder")
    if probe == path and not folder and path.is_dir():
        raise ExportError(f"cannot write --output {str(path)!r}: it is a folder; give a file name")
    if not os.access(probe, os.W_OK | (os.X_OK if probe.is_dir() else 0)):
        raise ExportError(
            f"cannot write --output {str(path)!r}: {os.strerror(errno.EACCES)} ({str(probe)!r})"
        )
    return path


def load_checkpoint(path: str | Path, weights_only: bool = True) -> dict:
    """The Lightning checkpoint at ``path`` (``torch.load(weights_only=...)``), or an error naming the file."""
    from zoo.tools.ensemble import read_checkpoint

    try:
        return read_checkpoint(path, weights_only)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(str(err)) from None


def network(ckpt: dict, source: str = "checkpoint") -> nn.Module:
    """The checkpoint's network (``ImageClassifier.model``) with its weights, in eval mode, built from the
    checkpoint's own hyper-parameters (no pretrained download, no channels-last or compile switches)."""
    from zoo.models.registry import TIMM_PREFIX, list_models
    from zoo.tools.ensemble import check_fits
    from zoo.training.module import ImageClassifier

    hparams = dict(ckpt.get("hyper_parameters") or {})
    if "arch" not in hparams:
        raise ExportError(
            f"{source} is not a zoo ImageClassifier checkpoint: its hyper-parameters have no 'arch'"
        )
    arch = str(hparams["arch"])
    if not arch.startswith(TIMM_PREFIX) and arch not in list_models():
        raise ExportError(
            f"{source}: its network {arch!r} is neither a timm model nor in the zoo's registry, so nothing can "
            "rebuild it; register it (zoo.register_model) and export from Python after importing that module"
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


def model_args(hparams: dict) -> dict:
    """The arguments, beside its name and ``num_classes``, that ``zoo.create_model`` built the checkpoint's network
    with (``ImageClassifier``'s ``in_chans`` and ``model_kwargs``). Dropout rates are left out, as timm leaves
    them out of a hub folder: they act in training only."""
    return {"in_chans": int(hparams.get("in_chans", 3)), **(hparams.get("model_kwargs") or {})}


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
    """Export ``net`` in format ``fmt`` (``onnx`` or ``pt2``) for inputs of ``meta['input_size']`` (a hub folder,
    ``timm``, is :func:`export_hub_folder`)."""
    example = torch.randn(2, *meta["input_size"])  # batch 2: 1 would be specialised, not left free
    if check_format(fmt) == "onnx":
        return export_onnx(net, example, path, meta, opset)
    return export_pt2(net, example, path, meta)


def export_hub_folder(
    net: nn.Module, hparams: dict, folder: str | Path, meta: dict, card: str | None = None
) -> Path:
    """Write ``net``, the network of a checkpoint with hyper-parameters ``hparams``, as a timm hub folder
    (:func:`zoo.tools.hub_folder.save`: the preprocessing and class names of ``meta`` in config.json) and ``card`` as
    its ``README.md``."""
    from zoo.tools import hub_folder

    data = {k: v for k, v in meta.items() if k in PREPROCESS_KEYS}
    try:
        hub_folder.save(net, folder, hparams["arch"], model_args(hparams), data, meta.get("class_names"))
    except ValueError as err:
        raise ExportError(str(err)) from err
    if card is not None:
        (Path(folder) / "README.md").write_text(card)
    return Path(folder)


def load_hub_folder(folder: str | Path) -> nn.Module:
    """The network of a hub folder as its users load it, in eval mode: plain timm
    (``timm.create_model("local-dir:DIR", pretrained=True)``) for a timm model, ``zoo.create_model`` for the zoo's."""
    from zoo.models.registry import create_model
    from zoo.tools import hub_folder

    source = f"local-dir:{folder}"
    if hub_folder.read_config(source)["architecture"].startswith(hub_folder.ZOO_PREFIX):
        return create_model(source).eval()
    import timm

    return timm.create_model(source, pretrained=True).eval()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an exported file, values decoded from JSON."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {p.key: json.loads(p.value) for p in model.metadata_props}
    return json.loads(metadata_path(path).read_text())


def run_exported(path: str | Path, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The exported model's logits for the batch ``x`` (onnxruntime for ``.onnx``, :func:`load_hub_folder` for a
    folder, else ``torch.export.load``)."""
    path = Path(path)
    x = torch.as_tensor(x, dtype=torch.float32)
    if path.is_dir():
        with torch.no_grad():
            return load_hub_folder(path)(x).numpy()
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
