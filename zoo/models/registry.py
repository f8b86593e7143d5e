"""One registry of model names and one factory, in the style of timm's.

``create_model("resnet18", num_classes=10)`` builds a zoo model; ``create_model("timm/convnext_tiny")``
hands the rest of the name to :mod:`zoo.models.backbones` (a pretrained timm backbone); ``create_model("local-dir:DIR")``
(or ``hf-hub:org/name``) rebuilds the network of a timm hub folder, with its weights (:mod:`zoo.tools.hub_folder`).

The families (``zoo/models/convnet.py``, ``resnet.py``, ``resnet_cifar.py``, ``vgg.py``) import this module to
register themselves; this module imports them (``_load_families``) only inside functions, at the first lookup. That lazy import is the one intended cycle
of the import graph (docs/architecture.md): it lets ``import zoo`` stay fast and a family file stay a
plain list of ``@register_model`` functions.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable

import torch
from torch import nn

TIMM_PREFIX = "timm/"

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Decorator: register a factory ``fn(num_classes=..., in_chans=..., **options) -> nn.Module`` by its name.

    The first line of the factory's docstring is what ``zoo models`` shows for it. The zoo's own are
    ``def resnet50(**kwargs)`` over their family's builder (:func:`zoo.models.base.build_model`); a factory
    may also name its options in its signature.
    """

    def add(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"model name {key!r} is registered twice")
        _MODELS[key] = f
        _DESCRIPTIONS[key] = (f.__doc__ or "").strip().splitlines()[0] if f.__doc__ else ""
        return f

    return add(fn) if fn is not None else add


def _load_families() -> None:
    # importing a family registers its models (one file per family)
    from zoo.models import convnet, resnet, resnet_cifar, vgg  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the zoo's own models in natural order (resnet18 < resnet101); ``pattern`` is a shell-style filter (``resnet*``)."""
    _load_families()
    names = sorted(_MODELS, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_description(name: str) -> str:
    _load_families()
    return _DESCRIPTIONS.get(name, "")


def model_options(name: str) -> dict[str, object]:
    """Options of a zoo model and their defaults.

    A factory that names its options (``def mynet(num_classes=10, width=32)``) lists them in its signature;
    the zoo's own, ``def resnet50(**kwargs)`` over one builder per family, are built once on the meta device
    (no memory, no initialisation) and report the ``options`` their builder recorded.
    """
    _load_families()
    factory = _MODELS[name]
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return {k: p.default for k, p in params.items() if p.default is not p.empty}
    with torch.device("meta"):
        return dict(getattr(factory(), "options", {}))


def unknown_options(name: str, unknown: list[str], options: dict[str, object]) -> str:
    """The error message for options ``unknown`` that the model ``name`` does not have."""
    return (
        f"model {name!r} has no option {', '.join(map(repr, unknown))}. Its options: "
        + ", ".join(f"{k}={v!r}" for k, v in options.items())
        + ". (Switching a recipe's arch? Reset its options with --model.model_kwargs '{}'.)"
    )


def create_model(name: str, num_classes: int | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a model by name: a registered zoo model, ``timm/<name>`` for a timm backbone, or ``local-dir:DIR`` /
    ``hf-hub:org/name`` for the network of a timm hub folder with its weights (timm's or a zoo family).

    ``num_classes`` None keeps the model's own default (10 for the tiny-image families, 1000 otherwise; a
    folder's own). ``pretrained_path`` (a ``.pth``/``.safetensors`` file, a zoo checkpoint, or ``local-dir:DIR``
    / ``hf-hub:org/name``) loads weights into either kind. ``head_stages`` (stage names) puts the classifier on
    those stages' pooled outputs (:mod:`zoo.models.stage_head`).
    """
    from zoo.tools import hub_folder

    if hub_folder.is_source(name):  # the folder's network, from its config.json, with the folder's weights
        arch, num_classes, kwargs = hub_folder.build_args(hub_folder.read_config(name), num_classes, **kwargs)
        return create_model(arch, num_classes, pretrained_path=name, **kwargs)
    head_stages = kwargs.pop("head_stages", None)
    if (
        head_stages
    ):  # the network, then its classifier on the stages, then the weights (of either: load_weights)
        from zoo.models.backbones import load_weights
        from zoo.models.stage_head import StageHead

        path, weights_only = kwargs.pop("pretrained_path", None), kwargs.pop("weights_only", True)
        body = create_model(name, num_classes, pretrained and not path, **kwargs)
        model = StageHead(body, list(head_stages), body.get_classifier().out_features)
        if path:
            load_weights(model, path, weights_only=weights_only, arch=name)
        return model
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name.startswith(TIMM_PREFIX):
        from zoo.models.backbones import create_timm_model

        return create_timm_model(name[len(TIMM_PREFIX) :], pretrained=pretrained, **kwargs)
    _load_families()
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name[:4]}*") or sorted(_MODELS)
        raise ValueError(
            f"unknown model {name!r}. Zoo models: {', '.join(sorted(_MODELS))}; close matches: "
            f"{', '.join(close[:8])}. Use 'timm/<name>' for a timm model (see `zoo models PATTERN`)."
        )
    if pretrained:
        raise ValueError(
            f"zoo model {name!r} has no pretrained weights; use a timm backbone ('timm/{name}') "
            "or load your own weights with `pretrained_path`."
        )
    pretrained_path = kwargs.pop("pretrained_path", None)
    weights_only = kwargs.pop("weights_only", True)
    params = inspect.signature(_MODELS[name]).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):  # the zoo's own builder checks its options
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(unknown_options(name, unknown, model_options(name)))
    model = _MODELS[name](**kwargs)
    if pretrained_path:
        from zoo.models.backbones import load_weights

        load_weights(model, pretrained_path, weights_only=weights_only, arch=name)
    return model
