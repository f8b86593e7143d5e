"""A classifier on the pooled outputs of several stages: the lectures' "linear classifiers from different stages"
for data unlike the pretraining data (the top features are the most specific to the pretraining task).

:class:`StageHead` wraps a network (a timm model) whose own classifier is removed: logits = W·[b₁; …; bₖ] + b,
where each block bᵢ is either ``top``, the network's pooled pre-logits features (its classifier's usual input),
or the average-pooled output of a named stage (timm's ``feature_info`` modules, e.g. ``blocks.4``), all from one
pass of timm's ``forward_intermediates``. ``zoo.create_model(arch, head_stages=[...])`` builds it, so a checkpoint whose hyper-parameters name the
stages rebuilds the same network (``zoo test``, ``zoo predict``, ``zoo export``); the linear probe installs it
when a stage set beats the top features alone (``callbacks.finetuning``).
"""

from __future__ import annotations

import torch
from torch import nn


def stage_taps(model: nn.Module, count: int = 2) -> dict[str, int]:
    """The last ``count`` stages below the top that a :class:`StageHead` can read: module name → channels, from
    timm's ``feature_info`` (the deepest one first); {} for a network without one."""
    info = getattr(model, "feature_info", None)
    if not info:
        return {}
    entries = [e for e in info if isinstance(e, dict) and "module" in e and "num_chs" in e]
    return {e["module"]: int(e["num_chs"]) for e in reversed(entries[-count:])}


TOP = "top"  # the network's own pooled features


def stage_features(body: nn.Module, x: torch.Tensor, stages: list[str]) -> list[torch.Tensor]:
    """The blocks ``stages`` of ``body`` for the batch ``x`` (``top``: the pooled pre-logits features; a stage
    name: its output, average-pooled), in one pass (timm's ``forward_intermediates``, indexed as ``feature_info``)."""
    names = [e["module"] for e in body.feature_info]
    indices = sorted(names.index(s) for s in stages if s != TOP)
    if TOP in stages:
        final, caught = body.forward_intermediates(x, indices=indices)
    else:  # the layers after the deepest stage read would run for nothing (and leave a heat map no gradient)
        final, caught = (
            None,
            body.forward_intermediates(x, indices=indices, intermediates_only=True, stop_early=True),
        )
    blocks = {names[i]: out.mean((2, 3)) for i, out in zip(indices, caught)}
    if TOP in stages:
        blocks[TOP] = body.forward_head(final, pre_logits=True)
    return [blocks[s] for s in stages]


class StageHead(nn.Module):
    """``body`` (its classifier removed) with a linear ``fc`` on the pooled blocks ``stages``, side by side.

    Args:
        body: a timm network with ``feature_info`` and ``forward_intermediates``; its classifier is reset.
        stages: ``top`` and module names of ``body`` (``feature_info``) whose pooled outputs the ``fc`` reads.
        num_classes: outputs of ``fc``.
    """

    def __init__(self, body: nn.Module, stages: list[str], num_classes: int):
        super().__init__()
        channels = {
            TOP: int(body.num_features),
            **stage_taps(body, len(getattr(body, "feature_info", None) or [])),
        }
        unknown = [s for s in stages if s not in channels]
        if unknown or not stages or not hasattr(body, "forward_intermediates"):
            raise ValueError(
                f"head_stages {list(stages)}: this network reads no such stages (its stages: "
                f"{', '.join(channels) or 'none'})"
            )
        cfg = dict(getattr(body, "pretrained_cfg", None) or {})
        self.body_classifier = cfg.get("classifier", "classifier")  # the name of the head it no longer has
        body.reset_classifier(0)
        self.body = body
        self.stages = list(stages)
        self.num_classes = num_classes
        self.num_features = sum(channels[s] for s in self.stages)
        self.fc = nn.Linear(self.num_features, num_classes)
        # what timm's loaders and the zoo's exporter read: the preprocessing, and this network's own layer names
        self.pretrained_cfg = {
            **cfg,
            "first_conv": f"body.{cfg.get('first_conv', 'conv_stem')}",
            "classifier": "fc",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat(stage_features(self.body, x, self.stages), dim=1))

    def get_classifier(self) -> nn.Module:
        return self.fc

    @property
    def default_cfg(self) -> dict:
        return self.pretrained_cfg

    def group_matcher(self, coarse: bool = False) -> dict:
        """The body's parameter groups, under ``body.`` (the stages fine-tuning and ``zoo summary`` read)."""
        return {key: _prefixed(rule) for key, rule in self.body.group_matcher(coarse=coarse).items()}

    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.body, "no_weight_decay", None)
        return {f"body.{n}" for n in (inner() if inner else ())}


def _prefixed(rule):
    """A timm group rule (a regex, or a list of (regex, order)) matched under ``body.``."""
    if isinstance(rule, str):
        return r"^body\.(?:" + rule.removeprefix("^") + ")"
    return [(_prefixed(pattern), order) for pattern, order in rule]


def fit_state_dict(model: nn.Module, state_dict: dict) -> dict:
    """``state_dict`` keyed for ``model``: a :class:`StageHead`'s (``body.*``, ``fc.*``) loads as it is into one, and
    as its backbone alone (``body.`` dropped, ``fc`` left out) into any other network; a plain network's into a
    StageHead's body (its classifier left out)."""
    stage_shaped = bool(state_dict) and all(k.startswith(("body.", "fc.")) for k in state_dict)
    if isinstance(model, StageHead) and not stage_shaped:
        head = f"{model.body_classifier}."
        return {f"body.{k}": v for k, v in state_dict.items() if not k.startswith(head)}
    if stage_shaped and not isinstance(model, StageHead):
        return {k[len("body.") :]: v for k, v in state_dict.items() if k.startswith("body.")}
    return state_dict
