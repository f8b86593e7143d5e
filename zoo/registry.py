"""One registry of model names and one factory, in the style of timm's.

``create_model("resnet18", num_classes=10)`` builds a zoo model; ``create_model("timm/convnext_tiny")``
hands the rest of the name to :mod:`zoo.backbones` (a pretrained timm backbone).
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable

from torch import nn

TIMM_PREFIX = "timm/"

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Decorator: register a factory ``fn(num_classes=..., in_chans=..., **options) -> nn.Module``.

    The first line of the factory's docstring is what ``zoo models`` shows for it.
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
    # importing the package registers every family (one file per family)
    import zoo.models  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the zoo's own models in natural order (resnet18 < resnet101); ``pattern`` is a shell-style filter (``resnet*``)."""
    _load_families()
    names = sorted(_MODELS, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_description(name: str) -> str:
    _load_families()
    return _DESCRIPTIONS.get(name, "")


def is_model(name: str) -> bool:
    _load_families()
    return name in _MODELS or name.startswith(TIMM_PREFIX)


def model_options(name: str) -> dict[str, object]:
    """Options of a zoo model and their defaults: the keyword arguments of its factory."""
    _load_families()
    params = inspect.signature(_MODELS[name]).parameters
    return {k: p.default for k, p in params.items() if p.default is not p.empty}


def create_model(name: str, num_classes: int | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a model by name: a registered zoo model, or ``timm/<name>`` for a timm backbone.

    ``num_classes`` None keeps the model's own default (10 for the tiny-image families, 1000 otherwise).
    ``pretrained_path`` (a ``.pth``/``.safetensors`` file or a zoo checkpoint) loads weights into either kind.
    """
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name.startswith(TIMM_PREFIX):
        from zoo.backbones import create_timm_model

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
    options = model_options(name)
    unknown = sorted(set(kwargs) - set(options))
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(_MODELS[name]).parameters.values())
    if unknown and not takes_any:
        raise ValueError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}. Its options: "
            + ", ".join(f"{k}={v!r}" for k, v in options.items())
            + ". (Switching a recipe's arch? Reset its options with --model.model_kwargs '{}'.)"
        )
    model = _MODELS[name](**kwargs)
    if pretrained_path:
        from zoo.backbones import load_weights

        load_weights(model, pretrained_path, weights_only=weights_only, arch=name)
    return model
