"""A network as a timm hub folder (``config.json``, ``model.safetensors``), the layout timm users share models in.

timm writes and reads the layout itself: ``timm.models.save_for_hf`` writes the weights and ``config.json`` (the
``architecture``, ``num_classes``, ``model_args``, ``label_names`` and ``pretrained_cfg``: input size,
interpolation, crop_pct, mean and std), and ``timm.create_model("local-dir:DIR", pretrained=True)`` or
``"hf-hub:org/name"`` rebuilds the network from it. A timm model is written exactly as timm writes it. A network
of the zoo's registry that timm cannot build (the zoo's CNN families, or any registered network) is written the
same way under the architecture ``zoo/<name>``, its constructor arguments as ``model_args``:
``zoo.create_model("local-dir:DIR")`` rebuilds it from the registry, and plain timm refuses it (``Unknown model``)
instead of loading its weights into a timm model of the same name. What this module adds to timm: that naming,
and the folder as a source of weights for the zoo (``--model.pretrained_path local-dir:DIR`` or ``hf-hub:org/name``),
with one-line errors, offline included.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from zoo.compat import hub_offline
from zoo.models.network import reachable

SOURCES = ("local-dir", "hf-hub")
ZOO_PREFIX = "zoo/"
TIMM_PREFIX = "timm/"  # the zoo's name of a timm model (zoo.models.registry)
CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what timm looks for, safetensors first
MODEL_INTERFACE = ("pretrained_cfg", "num_classes", "num_features")  # what save_for_hf reads of a network


def is_source(name: object) -> bool:
    """Whether ``name`` names a hub folder: ``local-dir:DIR`` or ``hf-hub:org/name`` (timm's prefixes)."""
    return isinstance(name, str) and name.partition(":")[0] in SOURCES and bool(name.partition(":")[2])


def hub_unreachable() -> bool:
    """True when the Hugging Face hub (``HF_ENDPOINT``) does not answer: read the local cache at once instead of
    a minute of retries."""
    return not reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


def _download(source: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo, _, revision = source.partition(":")[2].partition("@")
    try:
        with hub_offline() if hub_unreachable() else contextlib.nullcontext():
            return Path(hf_hub_download(repo, filename, revision=revision or None, library_name="timm"))
    except LocalEntryNotFoundError as err:  # offline (or HF_HUB_OFFLINE=1) and not in the local cache
        raise ValueError(
            f"cannot fetch {source}: the Hugging Face hub cannot be reached (no network?) and the cache has no "
            f"copy; download it where there is a network (hf download {repo} --local-dir DIR) and give local-dir:DIR"
        ) from err
    except EntryNotFoundError:  # the repository has no such file
        raise FileNotFoundError(filename) from None
    except HfHubHTTPError as err:  # no such repository, no access, ...
        raise ValueError(f"cannot fetch {source}: {str(err).splitlines()[0]}") from err


def source_file(source: str, filename: str) -> Path:
    """The file ``filename`` of the folder ``source``: ``DIR/filename``, or downloaded from the hub (cached)."""
    kind, _, ident = source.partition(":")
    if kind == "hf-hub":
        return _download(source, filename)
    folder = Path(ident).expanduser()
    if not folder.is_dir():
        raise ValueError(f"{source}: no such folder; give a folder written by `zoo export --format timm`")
    if not (folder / filename).is_file():
        raise FileNotFoundError(filename)
    return folder / filename


def read_config(source: str) -> dict:
    """The folder's ``config.json`` (timm's layout: ``architecture``, ``num_classes``, ``model_args``, ...)."""
    try:
        config = json.loads(source_file(source, CONFIG).read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{source} has no {CONFIG}: not a timm hub folder (zoo export --format timm)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{source}: cannot read its {CONFIG} ({err})") from err
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise ValueError(f"{source}: its {CONFIG} names no architecture; not a timm hub folder")
    return config


def read_weights(source: str) -> dict[str, torch.Tensor]:
    """The folder's weights (``model.safetensors``, else ``pytorch_model.bin`` read with ``weights_only=True``)."""
    from timm.models import load_state_dict

    for filename in WEIGHTS:
        try:
            path = source_file(source, filename)
        except FileNotFoundError:
            continue
        return load_state_dict(str(path), weights_only=True)
    raise ValueError(f"{source} has no weights ({' or '.join(WEIGHTS)})")


def zoo_name(config: dict) -> str:
    """The zoo's name of the folder's network: ``resnet18`` for ``zoo/resnet18``, ``timm/<arch>`` for a timm one."""
    arch = config["architecture"]
    return arch[len(ZOO_PREFIX) :] if arch.startswith(ZOO_PREFIX) else TIMM_PREFIX + arch


def check_arch(config: dict, arch: str, source: str) -> None:
    """The folder holds the network ``arch`` (a zoo name; a timm tag such as ``.ra_in1k`` is not compared)."""
    held = zoo_name(config)
    if held != arch.split(".")[0]:
        raise ValueError(
            f"{source} holds a {held} (its {CONFIG}), not a {arch}: give --model.arch {held} "
            "(and the model_kwargs it was trained with)"
        )


def pretrained_cfg(config: dict, num_classes: int | None = None) -> dict:
    """The ``pretrained_cfg`` that describes the folder's weights (what timm gives a model it loads from a folder):
    the preprocessing they expect, and ``label_names`` unless the model has ``num_classes`` of its own."""
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in (config.get("pretrained_cfg") or {}).items()}
    cfg["architecture"] = config["architecture"]
    names = config.get("label_names") or cfg.pop("label_names", None)
    if names and num_classes in (None, config.get("num_classes")):
        cfg["label_names"] = list(names)
    return cfg


def build_args(config: dict, num_classes: int | None = None, **kwargs) -> tuple[str, int | None, dict]:
    """How ``zoo.create_model`` rebuilds the folder's network: its zoo name, ``num_classes`` (the folder's unless
    given: another gets a new head, as timm's loader does) and the ``model_args`` of config.json (``kwargs``
    override them)."""
    args = {**(config.get("model_args") or {}), **kwargs}
    args.pop("pretrained", None)
    folder_classes = args.pop("num_classes", config.get("num_classes"))
    return zoo_name(config), folder_classes if num_classes is None else num_classes, args


ZOO_ONLY_ARGS = ("head_stages",)  # model arguments of zoo.create_model that plain timm's create_model lacks


def timm_builds(arch: str, model_args: dict | None = None) -> bool:
    """Whether plain timm builds the network ``zoo.create_model(arch, **model_args)`` builds: a ``timm/<name>``
    network without the zoo's own arguments (a stage probe's ``head_stages``: :mod:`zoo.models.stage_head`)."""
    return arch.startswith(TIMM_PREFIX) and not any((model_args or {}).get(k) for k in ZOO_ONLY_ARGS)


def folder_cfg(net: nn.Module, arch: str, data: dict | None = None, model_args: dict | None = None) -> dict:
    """The ``pretrained_cfg`` a folder records for ``net``: its own, with the preprocessing ``data`` it was trained
    with (timm data-config keys) instead of its source's (the source's test-time size and crop go, and the pool
    size when the input size changed), and ``zoo/<arch>`` as the architecture of a network timm cannot build."""
    cfg = {k: v for k, v in net.pretrained_cfg.items() if not k.startswith("test_")}
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in (data or {}).items()}
    if data.get("input_size") and tuple(data["input_size"]) != tuple(cfg.get("input_size") or ()):
        cfg["pool_size"] = None
    cfg.update(data)
    if not timm_builds(arch, model_args):
        cfg["architecture"] = ZOO_PREFIX + arch
    return cfg


def save(
    net: nn.Module,
    folder: str | Path,
    arch: str,
    model_args: dict | None = None,
    data: dict | None = None,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Write ``net``, built as ``zoo.create_model(arch, num_classes, **model_args)``, to ``folder`` with timm's
    ``save_for_hf``: ``model.safetensors``, and ``config.json`` with ``model_args``, the preprocessing ``data`` and
    the class names (:func:`folder_cfg`; ``net`` itself is left as it is).

    A ``timm/<name>`` network is written as timm writes it; any other (or one with zoo-only arguments) as
    ``zoo/<arch>``. The network needs timm's
    model interface (``pretrained_cfg``, ``num_classes``, ``num_features``), as the zoo's families have it.
    """
    from timm.models import save_for_hf

    missing = [a for a in MODEL_INTERFACE if not hasattr(net, a)]
    if missing:
        raise ValueError(
            f"{arch} lacks {', '.join(missing)} of timm's model interface, which a hub folder records; give the "
            "network these attributes (see zoo.models.base.ZooModel)"
        )
    described = copy.copy(net)  # the same modules and tensors, with the folder's pretrained_cfg
    described.pretrained_cfg = folder_cfg(net, arch, data, model_args)
    config = {"label_names": [str(n) for n in label_names]} if label_names else {}
    try:
        save_for_hf(
            described, str(folder), model_config=config, model_args=model_args, safe_serialization=True
        )
    except ValueError as err:  # an argument that is not a JSON value, or that contradicts the network
        raise ValueError(f"cannot write {arch} as a hub folder: {err}") from err
    return Path(folder)


__all__ = [
    "ZOO_PREFIX",
    "build_args",
    "check_arch",
    "folder_cfg",
    "is_source",
    "pretrained_cfg",
    "read_config",
    "read_weights",
    "save",
    "source_file",
    "timm_builds",
    "zoo_name",
]
