"""Freezing pretrained layers for fine-tuning: no gradients, and BatchNorm statistics kept as pretrained.

``freeze(m)`` sets ``requires_grad = False`` on m's parameters and puts m and its modules (BatchNorm included) in
eval mode, marked so that ``keep_frozen_eval(model)`` puts them back in eval after any ``model.train()``
(``ImageClassifier.train`` calls it), so a frozen BatchNorm normalises with its running statistics and never
updates them. ``unfreeze(m)`` undoes both. The parameters stay the same objects throughout, so an unfrozen
stage joins the optimizer (and DDP) as it is.

Written here because the libraries' helpers fail at one of these:

- Lightning's ``BaseFinetuning.freeze(train_bn=False)`` sets ``track_running_stats=False`` on BatchNorm: in train
  mode the layer then normalises with each batch's statistics instead of the pretrained running ones
  (Lightning issue 15062), and nothing keeps BatchNorm in eval mode when the module is put back in train mode.
- timm's ``timm.utils.freeze`` swaps BatchNorm for ``FrozenBatchNorm2d`` (its affine weights become buffers) and
  ``unfreeze`` swaps in new BatchNorm modules: the new parameters are not those the optimizer and DDP hold.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from zoo.compat import batch_norm_base

FROZEN = "_zoo_frozen"  # attribute set on modules kept in eval mode


def freeze(module: nn.Module) -> nn.Module:
    """requires_grad ← False for every parameter of ``module``; ``module`` and its sub-modules in eval mode (kept)."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        m.training = False
        setattr(m, FROZEN, True)
    return module


def freeze_norm_stats(module: nn.Module) -> nn.Module:
    """Keep the BatchNorm layers of ``module`` in eval mode (running statistics fixed); their affine weights train."""
    for m in module.modules():
        if isinstance(m, batch_norm_base()):
            m.training = False
            setattr(m, FROZEN, True)
    return module


def unfreeze(module: nn.Module, train: bool = True) -> nn.Module:
    """requires_grad ← True for every parameter of ``module``; its modules leave eval mode (train mode if ``train``)."""
    for p in module.parameters():
        p.requires_grad_(True)
    for m in module.modules():
        if getattr(m, FROZEN, False):
            setattr(m, FROZEN, False)
            m.training = train
    return module


def keep_frozen_eval(root: nn.Module) -> None:
    """Put the frozen modules under ``root`` back in eval mode (call after ``root.train()``)."""
    for m in root.modules():
        if getattr(m, FROZEN, False):
            m.training = False


def is_frozen(module: nn.Module) -> bool:
    """True when no parameter of ``module`` requires a gradient."""
    return not any(p.requires_grad for p in module.parameters())


class ParamSet(nn.Module):
    """Some parameters of ``model`` gathered for one optimizer group, under names that keep ``model``'s own
    ``no_weight_decay()`` list (a ViT's ``pos_embed`` and ``cls_token``) for the weight-decay split."""

    def __init__(self, model: nn.Module, params: Iterable[nn.Parameter]):
        super().__init__()
        self.params = nn.ParameterList(list(params))
        skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
        names = {id(p): n for n, p in model.named_parameters()}
        self._skip = {f"params.{i}" for i, p in enumerate(self.params) if names.get(id(p)) in skip}

    def no_weight_decay(self) -> set[str]:
        return self._skip


def head_and_backbone(model: nn.Module) -> tuple[nn.Module, list[nn.Parameter]]:
    """The classifier (``model.get_classifier()``) and the parameters outside it."""
    head = model.get_classifier()
    in_head = {id(p) for p in head.parameters()}
    return head, [p for p in model.parameters() if id(p) not in in_head]


def param_groups(model: nn.Module, backbone_lr_scale: float) -> list[dict]:
    """``head`` (lr × 1) and ``backbone`` (the trainable parameters outside the head, lr × ``backbone_lr_scale``):
    the lectures' smaller lr for pretrained layers. Frozen parameters are left out; they join when unfrozen."""
    head, backbone = head_and_backbone(model)
    groups = [{"name": "head", "params": head, "lr_scale": 1.0}]
    trainable = [p for p in backbone if p.requires_grad]
    if trainable:
        groups.append(
            {"name": "backbone", "params": ParamSet(model, trainable), "lr_scale": backbone_lr_scale}
        )
    return groups


__all__ = [
    "ParamSet",
    "freeze",
    "freeze_norm_stats",
    "head_and_backbone",
    "is_frozen",
    "keep_frozen_eval",
    "param_groups",
    "unfreeze",
]
