"""Stochastic depth (Huang et al., 2016): drop whole residual branches while training, keep them all at test.

The dropping itself is timm's ``DropPath`` (the zoo ResNets' blocks and timm's residual families hold one per
branch); this callback only sets each module's ``drop_prob`` by the block's depth, ramps the rates over the
run if asked, and logs them. It is the one way to train with stochastic depth from a recipe: its ``rule`` gives the
rates a model's own ``drop_path_rate`` would fix at construction (``huang``: the zoo's ResNets; ``timm``: timm's
ViT, ConvNeXt and ResNet; ``efficientnet``: timm's EfficientNet and MobileNet builder), and more (a ramp, a start).
"""

from __future__ import annotations

import math
import re
from typing import Literal

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from timm.layers import DropPath
from torch import nn

from zoo.models.blocks import drop_path_rates

Rule = Literal["huang", "timm", "efficientnet"]
STAND_IN = re.compile(r"drop_path\d*")  # a block's DropPath in timm: drop_path, drop_path1, drop_path2


def depth_rates(p_last: float, num_blocks: int, rule: Rule = "huang") -> list[float]:
    """Drop rates of blocks l = 1..L for a rate r: ``huang`` (l/L)·r (:func:`zoo.models.blocks.drop_path_rates`);
    ``timm`` (l − 1)/(L − 1)·r (timm's linspace, 0 at the first block); ``efficientnet`` (l − 1)/L·r (timm's
    EfficientNet builder: r is never reached)."""
    if rule == "huang":
        return drop_path_rates(p_last, num_blocks)
    if rule == "timm":
        return [p_last * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
    if rule == "efficientnet":
        return [p_last * i / num_blocks for i in range(num_blocks)]
    raise ValueError(f"StochasticDepth: unknown rule {rule!r}; choose 'huang', 'timm' or 'efficientnet'")


def drop_path_blocks(model: nn.Module, replace_identity: bool = True) -> list[list[DropPath]]:
    """The model's DropPath modules grouped by the block that holds them, in depth order.

    A block is the module whose direct children include the DropPath (a ViT block has two, ``drop_path1``
    and ``drop_path2``, which share the block's rate). timm builds a stand-in when its ``drop_path_rate`` is 0:
    an ``nn.Identity`` (ViT, ConvNeXt, EfficientNet) or ``None`` (ResNet, whose blocks skip a ``drop_path`` of
    None); with ``replace_identity`` such stand-ins named ``drop_path``, ``drop_path1``, ... become DropPath modules (no parameters,
    so weights and checkpoints are unchanged).
    """
    blocks: dict[str, list[DropPath]] = {}
    for parent_name, parent in list(model.named_modules()):
        if replace_identity:
            for name, value in list(vars(parent).items()):
                if value is None and STAND_IN.fullmatch(name):  # a plain attribute, not a child module
                    delattr(parent, name)
                    setattr(parent, name, DropPath(0.0))
        for name, child in list(parent.named_children()):
            if replace_identity and isinstance(child, nn.Identity) and STAND_IN.fullmatch(name):
                child = DropPath(0.0)
                setattr(parent, name, child)
            if isinstance(child, DropPath):
                blocks.setdefault(parent_name, []).append(child)
    return list(blocks.values())


class StochasticDepth(Callback):
    """Block l of L survives with p_l = 1 − (l/L)(1 − p_L), so it drops its branch with (l/L)(1 − p_L) = (l/L)·r.

    That is Huang et al.'s linear decay rule, where p_l is the *survival* probability and p_L the last block's;
    ``drop_path_rate`` r is the last block's drop probability 1 − p_L (r = 0.5 for the paper's p_L = 0.5).
    While training, y = x + b·m/(1 − q_l) with m ~ Bernoulli(1 − q_l) and q_l the block's drop rate; at test y = x + b.

    The last block's drop rate ramps over the run: r(e) = r·clip((e − s + 1)/max(R, 1), 0, 1) at epoch e,
    with s = ``start_epoch`` and R = ``ramp_epochs`` (0 for the first s epochs, then up to r in R epochs).
    In evaluation (validation, test, predict) timm's DropPath is the identity, so the whole network runs
    deterministically. Logs ``stochastic_depth/p_L`` and ``stochastic_depth/mean`` (expected share of
    branches dropped) each epoch, and prints the per-block rates once.

    Args:
        drop_path_rate: r = 1 − p_L, the drop rate of the deepest block (Huang et al.: 0.5 for 110-layer CIFAR
            ResNets).
        rule: ``huang`` (l/L, as the zoo ResNets' ``drop_path_rate``), ``timm`` (linspace from 0 to r, as timm's
            ViT, ConvNeXt and ResNet) or ``efficientnet`` ((l − 1)/L, as timm's EfficientNet and MobileNet).
        start_epoch: s, epochs trained without dropping.
        ramp_epochs: R, epochs over which p_L rises from 0 (0 or 1: at once).
        replace_identity: turn timm's stand-ins named ``drop_path``, ``drop_path1``, ... (``nn.Identity`` or ``None``) into DropPath
            modules.
    """

    def __init__(
        self,
        drop_path_rate: float = 0.5,
        rule: Rule = "huang",
        start_epoch: int = 0,
        ramp_epochs: int = 0,
        replace_identity: bool = True,
    ):
        if not (math.isfinite(drop_path_rate) and 0.0 <= drop_path_rate < 1.0):
            raise ValueError(f"StochasticDepth: drop_path_rate={drop_path_rate!r} must be in [0, 1)")
        if start_epoch < 0 or ramp_epochs < 0:
            raise ValueError(
                f"StochasticDepth: start_epoch={start_epoch!r} and ramp_epochs={ramp_epochs!r} must be ≥ 0"
            )
        depth_rates(drop_path_rate, 1, rule)  # validates the rule name
        self.drop_path_rate, self.rule = float(drop_path_rate), rule
        self.start_epoch, self.ramp_epochs = int(start_epoch), int(ramp_epochs)
        self.replace_identity = replace_identity
        self.blocks: list[list[DropPath]] = []
        self.rates: list[float] = []

    def p_last(self, epoch: int) -> float:
        """r(e) of the ramp: the last block's drop rate at epoch ``epoch``."""
        ramp = (epoch - self.start_epoch + 1) / max(self.ramp_epochs, 1)
        return self.drop_path_rate * min(max(ramp, 0.0), 1.0)

    def attach(self, model: nn.Module) -> list[list[DropPath]]:
        """Find (and, for timm models, create) the DropPath modules of ``model``."""
        self.blocks = drop_path_blocks(model, self.replace_identity)
        if not self.blocks:
            raise ValueError(
                f"StochasticDepth: {type(model).__name__} has no residual branches with drop-path modules "
                "(timm's DropPath, or stand-ins named drop_path*); use a residual model (zoo resnet*, timm "
                "ResNet/ConvNeXt/EfficientNet/ViT)"
            )
        return self.blocks

    def set_rates(self, p_last: float) -> list[float]:
        """Set every block's ``drop_prob`` by the depth rule for a last-block rate ``p_last``."""
        self.rates = depth_rates(p_last, len(self.blocks), self.rule)
        for modules, rate in zip(self.blocks, self.rates):
            for m in modules:
                m.drop_prob = rate
        return self.rates

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.attach(pl_module)
            self.set_rates(self.drop_path_rate)
            shown = ", ".join(f"{r:.3f}" for r in self.rates)
            rank_zero_info(f"Stochastic depth over {len(self.blocks)} blocks, rates at full ramp: {shown}")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        rates = self.set_rates(self.p_last(trainer.current_epoch))
        pl_module.log("stochastic_depth/p_L", rates[-1], on_step=False, on_epoch=True)
        pl_module.log("stochastic_depth/mean", sum(rates) / len(rates), on_step=False, on_epoch=True)

    def state_dict(self) -> dict:
        return {"p_last": self.rates[-1] if self.rates else None}

    def load_state_dict(self, state_dict: dict) -> None:
        """The rates in use when the checkpoint was written: a run resumed mid-epoch gets no on_train_epoch_start
        before its next batch, so without them it would drop at the full rate p_L until the epoch ends."""
        if state_dict.get("p_last") is not None and self.blocks:
            self.set_rates(state_dict["p_last"])
