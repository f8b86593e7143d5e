"""Optimizer set-up: the lectures' (docs/notes.md) optimizers by name (torch's classes), weight-decay groups, linear scaling rule.

``OptimizerConfig`` is the ``optimizer:`` section of ``model:`` in a recipe. A field left ``None`` takes
the lectures' default for the chosen optimizer (``OPTIMIZERS``), e.g. Adam: lr 1e-3, β 0.9/0.999, ε 1e-8.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from timm.optim import param_groups_weight_decay
from torch import nn

from zoo.compat import dropout_base
from zoo.errors import did_you_mean
from zoo.protocols import Batched
from zoo.training.rmsprop_nesterov import RMSpropNesterov

# name -> (torch optimizer class, the lectures' defaults; the keys are also the options the name accepts)
_SGD = dict(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0)
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict]] = {
    "sgd": (torch.optim.SGD, _SGD),  # W ← W − α∇L
    "momentum": (torch.optim.SGD, {**_SGD, "momentum": 0.9}),  # v ← βv + ∇L; W ← W − αv
    "nesterov": (torch.optim.SGD, {**_SGD, "momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, dict(lr=0.01, eps=1e-10, weight_decay=0.0)),
    "rmsprop": (torch.optim.RMSprop, dict(lr=1e-3, alpha=0.9, eps=1e-8, momentum=0.0, weight_decay=0.0)),
    "rmsprop_nesterov": (RMSpropNesterov, dict(lr=1e-3, alpha=0.9, eps=1e-8, momentum=0.9, weight_decay=0.0)),
    "adam": (torch.optim.Adam, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)),
    "adamw": (torch.optim.AdamW, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)),
    "lbfgs": (
        torch.optim.LBFGS,
        dict(lr=1.0, max_iter=20, history_size=100, line_search_fn="strong_wolfe"),
    ),
}
OptimizerName = Literal[
    "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "rmsprop_nesterov", "adam", "adamw", "lbfgs"
]  # fmt: skip
_ALWAYS = ("name", "decay_norm_and_bias", "reference_batch_size")  # options of every optimizer


@dataclass
class OptimizerConfig:
    """Which optimizer and its hyper-parameters; ``None`` means the lectures' default for ``name``.

    Args:
        name: sgd, momentum (SGD + momentum 0.9), nesterov, adagrad, rmsprop (decay 0.9), rmsprop_nesterov,
            adam, adamw or lbfgs (full batch: set the data's ``batch_size: 0``).
        lr: base learning rate of the head group (at ``reference_batch_size`` when that is set).
        momentum: β of SGD/RMSProp momentum (the lectures: 0.5, 0.9 or 0.99).
        nesterov: Nesterov momentum for ``sgd``/``momentum``.
        betas: Adam's (β1, β2).
        alpha: RMSProp's decay of the squared-gradient average (≥ 0.9 in the lectures).
        eps: ε added to the denominator √m + ε.
        weight_decay: L2 coefficient (decoupled for adamw).
        decay_norm_and_bias: also decay biases and normalisation weights (off: they are not decayed).
        reference_batch_size: the batch ``lr`` is stated for; the run's global batch scales it (off: None).
        max_iter: L-BFGS iterations per step.
        history_size: L-BFGS memory.
        line_search_fn: L-BFGS line search, ``strong_wolfe`` or ``none``.
    """

    name: OptimizerName = "momentum"
    lr: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None
    alpha: float | None = None
    eps: float | None = None
    weight_decay: float | None = None
    decay_norm_and_bias: bool = False
    reference_batch_size: int | None = None
    max_iter: int | None = None
    history_size: int | None = None
    line_search_fn: str | None = None

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer name {self.name!r}{did_you_mean(self.name, OPTIMIZERS, 2)}; choose one of "
                f"{', '.join(OPTIMIZERS)}"
            )
        accepted = OPTIMIZERS[self.name][1]
        unused = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.name not in accepted and f.name not in _ALWAYS and getattr(self, f.name) is not None
        ]
        if unused:  # e.g. a recipe's SGD momentum after `--model.optimizer.name adam`
            rank_zero_warn(
                f"optimizer {self.name!r} ignores {', '.join(unused)}; its options are {', '.join(accepted)}"
            )
        self._check_ranges()

    def _check_ranges(self) -> None:
        def bad(key, value, rule):
            raise ValueError(f"optimizer.{key}={value!r} must be {rule}")

        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            bad("lr", self.lr, "a positive finite number")
        for key in ("momentum", "alpha"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < 1:
                bad(key, value, "in [0, 1)")
        if self.betas is not None and not all(0 <= b < 1 for b in self.betas):
            bad("betas", self.betas, "two numbers in [0, 1)")
        if self.eps is not None and not self.eps > 0:
            bad("eps", self.eps, "positive")
        if self.weight_decay is not None and not (
            math.isfinite(self.weight_decay) and self.weight_decay >= 0
        ):
            bad("weight_decay", self.weight_decay, "≥ 0")
        if self.reference_batch_size is not None and self.reference_batch_size <= 0:
            bad("reference_batch_size", self.reference_batch_size, "a positive batch size (or null: off)")
        if self.line_search_fn not in (None, "strong_wolfe", "none"):
            bad("line_search_fn", self.line_search_fn, "'strong_wolfe' or 'none'")
        opts = self.resolved()
        if opts.get("nesterov") and not opts.get("momentum"):
            bad("nesterov", True, "used with a momentum > 0")

    def resolved(self) -> dict:
        """The hyper-parameters the optimizer gets: the given fields over the lectures' defaults for ``name``."""
        out = dict(OPTIMIZERS[self.name][1])
        out.update({k: getattr(self, k) for k in out if getattr(self, k, None) is not None})
        if "betas" in out:
            out["betas"] = tuple(out["betas"])
        if out.get("line_search_fn") == "none":
            out["line_search_fn"] = None
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> OptimizerConfig:
        """Build from a checkpoint's or a user's dict; an unknown key is an error naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown optimizer option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)


def scale_lr(lr: float, global_batch: int, reference_batch: int) -> float:
    """Linear scaling rule of the lectures: batch ×k → lr ×k, i.e. lr · global_batch / reference_batch."""
    return lr * global_batch / reference_batch


def global_batch_size(trainer, datamodule=None) -> int:
    """Per-device batch (the data module's ``batch_size``; 0 = the whole training split) × devices × nodes
    × gradient-accumulation steps."""
    dm = datamodule if datamodule is not None else getattr(trainer, "datamodule", None)
    per_device = dm.batch_size if isinstance(dm, Batched) else None
    if per_device is None:
        raise ValueError(
            "optimizer.reference_batch_size is set, but the run has no data module with a `batch_size` to "
            "compute the global batch from; give the data module a batch_size or set reference_batch_size: null"
        )
    if per_device == 0:
        per_device = len(dm.train_dataloader().dataset)
    return int(per_device) * trainer.num_devices * trainer.num_nodes * trainer.accumulate_grad_batches


def weight_decay_groups(module: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """timm's split of a module's trainable parameters: 1-D tensors (biases, norm weights) and names in
    ``module.no_weight_decay()`` get no decay unless ``decay_norm_and_bias``."""
    skip = module.no_weight_decay() if hasattr(module, "no_weight_decay") else ()
    return param_groups_weight_decay(
        module,
        weight_decay,
        weight_decay_exclude_1d=not decay_norm_and_bias,
        no_weight_decay_list=() if decay_norm_and_bias else skip,
    )


def _as_module(params) -> nn.Module:
    if isinstance(params, nn.Module):
        return params
    holder = nn.Module()
    holder.params = nn.ParameterList(list(params))
    return holder


def build_param_groups(groups, config: OptimizerConfig, lr: float) -> list[dict]:
    """Turn ``[{"name", "params", "lr_scale"}]`` into the optimizer's groups: lr = ``lr`` × lr_scale, each
    group split in two by weight decay (named ``NAME`` and ``NAME/no_decay``)."""
    if isinstance(groups, nn.Module) or not all(isinstance(g, dict) for g in groups):
        groups = [{"name": "model", "params": groups}]
    weight_decay = config.resolved().get("weight_decay", 0.0)
    out = []
    for group in groups:
        name, scale = group.get("name", f"pg{len(out)}"), group.get("lr_scale", 1.0)
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"param group {name!r} has lr_scale={scale!r}; it must be ≥ 0")
        module = _as_module(group["params"])
        parts = weight_decay_groups(module, weight_decay, config.decay_norm_and_bias)
        for part in parts:
            no_decay = weight_decay > 0 and part["weight_decay"] == 0
            extra = {k: v for k, v in group.items() if k not in ("params", "name", "lr_scale")}
            part.update(extra, name=f"{name}/no_decay" if no_decay else name, lr=lr * scale, lr_scale=scale)
            out.append(part)
    return out


def build_optimizer(
    params: nn.Module | Iterable, config: OptimizerConfig, global_batch: int | None = None
) -> torch.optim.Optimizer:
    """Build ``config.name`` over ``params`` (a module, parameters, or ``[{"name", "params", "lr_scale"}]``).

    With ``config.reference_batch_size`` set, the lr is scaled to ``global_batch`` by the linear scaling
    rule, and the rule is reported once ("lr 0.1 @ 256 → 0.4 @ 1024").
    """
    cls, _ = OPTIMIZERS[config.name]
    options = config.resolved()
    lr = options.pop("lr")
    if config.reference_batch_size is not None:
        if global_batch is None:
            raise ValueError("optimizer.reference_batch_size is set: build_optimizer needs the global batch")
        scaled = scale_lr(lr, global_batch, config.reference_batch_size)
        rank_zero_info(
            f"Linear scaling rule: lr {lr:g} @ {config.reference_batch_size} → {scaled:g} @ {global_batch}"
        )
        lr = scaled
    if config.name == "lbfgs":
        return _build_lbfgs(params, lr, options)
    groups = build_param_groups(params, config, lr)
    if not any(g["params"] for g in groups):
        raise ValueError("the model has no trainable parameters (all frozen?): nothing to optimise")
    return cls([g for g in groups if g["params"]], lr=lr, **options)


def _build_lbfgs(params, lr: float, options: dict) -> torch.optim.LBFGS:
    """torch's L-BFGS takes one parameter group only (and no weight decay)."""
    groups = params if isinstance(params, list) and all(isinstance(g, dict) for g in params) else None
    if groups is None:
        groups = [{"name": "model", "params": params}]
    scales = {g.get("lr_scale", 1.0) for g in groups}
    if len(scales) > 1:
        raise ValueError(
            f"L-BFGS takes one parameter group, but the model gives groups with lr_scale {sorted(scales)}; "
            "use another optimizer for per-group learning rates"
        )
    flat = [p for g in groups for p in _as_module(g["params"]).parameters() if p.requires_grad]
    return torch.optim.LBFGS([{"params": flat, "name": "model"}], lr=lr * scales.pop(), **options)


def warn_lbfgs_noise(model: nn.Module, trainer) -> None:
    """L-BFGS needs a deterministic loss over the whole training set; warn about what makes it noisy."""
    issues = []
    drops = [
        name or "model"
        for name, m in model.named_modules()
        if (isinstance(m, dropout_base()) and m.p > 0) or getattr(m, "drop_prob", 0) > 0
    ]
    if drops:
        issues.append(f"dropout in {', '.join(drops[:3])} (set model.drop_rate: 0)")
    dm = getattr(trainer, "datamodule", None)
    if dm is not None and getattr(dm, "hparams", {}).get("augment"):
        issues.append("data augmentation (set data.augment: false)")
    if isinstance(dm, Batched) and dm.batch_size:
        issues.append(f"mini-batches of {dm.batch_size} (set data.batch_size: 0, the whole training split)")
    if issues:
        rank_zero_warn(
            "L-BFGS expects the full-batch loss without noise, but this run has " + "; ".join(issues)
        )
