"""Fine-tune a pretrained backbone by strategy: freeze its stages, and unfreeze them into the optimizer on time.

Why not Lightning's ``BackboneFinetuning``/``BaseFinetuning``: its frozen BatchNorm layers normalise with batch
statistics (issue 15062), a resumed run re-freezes what was unfrozen (issue 21901), and under DDP the layers it
unfreezes are never synchronised, since DDP only registers the parameters that required grad when it wrapped
the model (issue 20340). Here freezing keeps BatchNorm in eval mode (:mod:`zoo.freeze`), a resumed run replays
the unfreezing before the optimizer state is loaded, and DDP wraps the model again after each unfreezing.
"""

from __future__ import annotations

import difflib
import warnings

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from callbacks.finetune_strategies import (
    DESCRIPTIONS,
    STRATEGIES,
    Join,
    Strategy,
    choose,
    images_per_class,
    plan,
)
from callbacks.lr_schedule import write_lrs
from callbacks.warmup import LinearWarmup
from zoo import freeze as fz
from zoo.backbones import model_stages
from zoo.optim import build_param_groups

EVAL_MODE_WARNING = r"Found \d+ module\(s\) in eval mode at the start of training"  # Lightning's


class FineTuning(Callback):
    """lr_backbone = backbone_lr_scale × lr_head; little data → a linear classifier on top, more → more layers.

    The strategies follow the notes' transfer-learning table (:mod:`callbacks.finetune_strategies`), and the
    pretrained layers always train at a smaller lr (``model.backbone_lr_scale``, e.g. 0.1).

    Frozen stages have ``requires_grad = False`` and stay in eval mode (BatchNorm running statistics unchanged).
    A stage that is unfrozen joins the optimizer as a new param group (``backbone``, or ``backbone/<stage>`` for
    ``gradual``) at ``lr × backbone_lr_scale``; the trainer's lr schedules act on it from then on, and its lr
    ramps up from 0 over ``warmup`` epochs (a :class:`~callbacks.warmup.LinearWarmup` of that group).

    Args:
        strategy: ``linear``, ``freeze_unfreeze``, ``full``, ``gradual``, ``auto`` (picks one from the number of
            training images per class, and says which and why) or ``none`` (off).
        unfreeze_epoch: ``freeze_unfreeze``: epochs of head-only training before the backbone joins;
            ``gradual``: the epoch at which the top stage joins.
        every: ``gradual``: epochs between two stages joining.
        stages: ``gradual``: how many backbone stages to unfreeze, from the top (None: all, down to the stem).
        warmup: epochs over which a joining group's lr rises linearly from 0 (0: at once).
        keep_bn_eval: keep the BatchNorm layers of unfrozen stages in eval mode too (the pretrained running
            statistics; for small batches). Their affine weights still train.
        auto_linear_below: ``auto`` picks ``linear`` under this many training images per class (median).
        auto_full_from: ``auto`` picks ``full`` from this many images per class, ``freeze_unfreeze`` between.
    """

    def __init__(
        self,
        strategy: Strategy = "none",
        unfreeze_epoch: int = 1,
        every: int = 1,
        stages: int | None = None,
        warmup: float = 1.0,
        keep_bn_eval: bool = False,
        auto_linear_below: int = 100,
        auto_full_from: int = 1000,
    ):
        if strategy not in STRATEGIES:
            close = difflib.get_close_matches(str(strategy), STRATEGIES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown finetune.strategy {strategy!r}{hint}; choose one of {', '.join(STRATEGIES)}"
            )
        if not warmup >= 0:
            raise ValueError(f"finetune.warmup={warmup!r} must be ≥ 0 epochs")
        if not 0 < auto_linear_below <= auto_full_from:
            raise ValueError(
                f"finetune.auto_linear_below={auto_linear_below} must be > 0 and ≤ auto_full_from={auto_full_from}"
            )
        self.strategy, self.unfreeze_epoch, self.every, self.max_stages = (
            strategy,
            unfreeze_epoch,
            every,
            stages,
        )
        self.warmup, self.keep_bn_eval = float(warmup), keep_bn_eval
        self.auto_linear_below, self.auto_full_from = auto_linear_below, auto_full_from
        self.resolved: str | None = None  # the strategy in use (``auto`` resolved)
        self.stages: dict = {}  # backbone stage name -> Stage, top-down
        self.joins: list[Join] = []
        self.joined: list[str] = []  # names of the joins applied, in order
        self._warmups: list[LinearWarmup] = []
        self._replay: list[str] = []

    # --- set-up: freeze what does not train from the start ---------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.strategy == "none":
            return
        self.stages = dict(model_stages(pl_module.model)[1:])
        self.resolved = self._resolve(trainer, pl_module)
        self._start(trainer, pl_module)

    def _start(self, trainer, pl_module) -> None:
        self.joins = plan(self.resolved, list(self.stages), self.unfreeze_epoch, self.every, self.max_stages)
        self._check_length(trainer)
        lbfgs = getattr(getattr(pl_module, "optimizer_config", None), "name", None) == "lbfgs"
        if lbfgs and any(j.epoch > 0 for j in self.joins):
            raise ValueError(
                f"finetune.strategy={self.resolved} adds param groups mid-run, but L-BFGS takes one group: "
                "use another optimizer, or finetune.strategy full / linear"
            )
        at_start = {s for j in self.joins if j.epoch == 0 for s in j.stages}
        for name, stage in self.stages.items():
            fz.unfreeze(stage, train=pl_module.training)
            if name not in at_start:
                fz.freeze(stage)
            elif self.keep_bn_eval:
                fz.freeze_norm_stats(stage)
        self.joined = [j.name for j in self.joins if j.epoch == 0]
        if len(at_start) < len(self.stages):  # the frozen stages are in eval mode on purpose: said in _report
            warnings.filterwarnings("ignore", EVAL_MODE_WARNING, PossibleUserWarning)
        self._add_warmups(trainer)
        self._report(pl_module)

    def _resolve(self, trainer, pl_module) -> str:
        pretrained = _pretrained(pl_module)
        if self.strategy != "auto":
            if not pretrained and self.strategy in ("linear", "freeze_unfreeze", "gradual"):
                rank_zero_warn(
                    f"finetune.strategy={self.strategy} freezes layers of a model without pretrained weights "
                    "(random features): give --model.pretrained true or --model.pretrained_path FILE, or use full"
                )
            return self.strategy
        per_class = images_per_class(_train_targets(trainer))
        strategy, why = choose(per_class, pretrained, self.auto_linear_below, self.auto_full_from)
        rank_zero_info(f"Fine-tuning strategy auto → {strategy}: {why}.")
        return strategy

    def _check_length(self, trainer) -> None:
        epochs = trainer.max_epochs
        if epochs is None or epochs < 0:
            return
        for j in self.joins:
            if j.epoch >= epochs:
                raise ValueError(
                    f"finetune.strategy={self.resolved} unfreezes {j.name} at epoch {j.epoch}, but "
                    f"trainer.max_epochs={epochs}: lower finetune.unfreeze_epoch (or every/stages) or train longer"
                )
            if j.epoch > 0 and j.epoch + self.warmup > epochs:
                raise ValueError(
                    f"finetune.warmup={self.warmup:g} epochs after unfreezing {j.name} at epoch {j.epoch} runs "
                    f"past trainer.max_epochs={epochs}: shorten the warmup or train longer"
                )

    def _add_warmups(self, trainer) -> None:
        """A LinearWarmup per group joining after the start: its lr rises from 0 over ``warmup`` epochs."""
        trainer.callbacks[:] = [c for c in trainer.callbacks if c not in self._warmups]
        self._warmups = []
        if self.warmup > 0:
            for j in self.joins:
                if j.epoch > 0:
                    self._warmups.append(LinearWarmup(self.warmup, start=j.epoch, groups=[j.name]))
        trainer.callbacks.extend(self._warmups)

    def _report(self, pl_module) -> None:
        frozen = [n for n, s in self.stages.items() if fz.is_frozen(s)]
        scale = pl_module.hparams.get("backbone_lr_scale", 1.0)
        rank_zero_info(
            f"Fine-tuning strategy {self.resolved}: {DESCRIPTIONS[self.resolved]}. Frozen now: "
            f"{len(frozen)} of {len(self.stages)} backbone stages; backbone lr × {scale:g}."
        )
        if self.joins and scale == 1.0 and _pretrained(pl_module):
            rank_zero_warn(
                "the pretrained backbone trains at the head's lr; the notes advise a smaller lr for pretrained "
                "layers: set --model.backbone_lr_scale 0.1"
            )
        elif self.joins and scale < 1.0 and not _pretrained(pl_module):
            rank_zero_warn(
                f"model.backbone_lr_scale={scale:g} slows down layers that have no pretrained weights: "
                "set --model.backbone_lr_scale 1 to train a model from scratch"
            )

    # --- unfreezing --------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        """On resume: unfreeze what the checkpoint's run had unfrozen, before Lightning loads the optimizer state
        (whose param groups must then match in number and order)."""
        for name in self._replay:
            self._join(trainer, pl_module, self._by_name(name))
        self._replay = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        for j in self.joins:
            if j.epoch <= trainer.current_epoch and j.name not in self.joined:
                self._join(trainer, pl_module, j)
                write_lrs(trainer)  # the new group's lr from this very step (its warmup starts at 0)
                scale = pl_module.hparams.get("backbone_lr_scale", 1.0)
                ramp = f", lr warming up over {self.warmup:g} epochs" if self.warmup else ""
                rank_zero_info(
                    f"Epoch {trainer.current_epoch}: unfroze {', '.join(j.stages)} as param group {j.name!r} "
                    f"(lr × {scale:g}{ramp})"
                )

    def _join(self, trainer, pl_module, join: Join) -> None:
        for name in join.stages:
            fz.unfreeze(self.stages[name], train=pl_module.training)
            if self.keep_bn_eval:
                fz.freeze_norm_stats(self.stages[name])
        params = fz.ParamSet(pl_module.model, [p for n in join.stages for p in self.stages[n].parameters()])
        optimizer = trainer.optimizers[0]
        group = {
            "name": join.name,
            "params": params,
            "lr_scale": pl_module.hparams.get("backbone_lr_scale", 1.0),
        }
        for g in build_param_groups([group], pl_module.optimizer_config, _base_lr(optimizer)):
            if g["params"]:
                optimizer.add_param_group(g)
        self.joined.append(join.name)
        _rewrap_ddp(trainer)

    def _by_name(self, name: str) -> Join:
        for j in self.joins:
            if j.name == name:
                return j
        raise ValueError(
            f"the checkpoint's fine-tuning unfroze the group {name!r}, which this run's plan "
            f"({self.resolved}: {[j.name for j in self.joins]}) does not have: resume with the same model and "
            "finetune options"
        )

    # --- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"strategy": self.resolved, "joined": list(self.joined), "stages": list(self.stages)}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.strategy == "none" or not self.stages:
            return
        saved, stages = state_dict.get("strategy"), state_dict.get("stages")
        if stages is not None and list(stages) != list(self.stages):
            raise ValueError(
                f"the checkpoint's backbone has the stages {stages}, this model {list(self.stages)}: resume with "
                "the model the checkpoint was trained with"
            )
        if saved != self.resolved:
            raise ValueError(
                f"the checkpoint was fine-tuned with strategy {saved!r}, this run resolves to {self.resolved!r}: "
                f"resume with --finetune.strategy {saved}"
            )
        self._replay = [n for n in state_dict.get("joined", []) if n not in self.joined]


def _pretrained(pl_module) -> bool:
    return bool(pl_module.hparams.get("pretrained") or pl_module.hparams.get("pretrained_path"))


def _train_targets(trainer):
    """Labels of the training split (``auto`` counts images per class from them)."""
    dm = trainer.datamodule
    split = getattr(dm, "splits", {}).get("train") if dm is not None else None
    targets = getattr(split, "targets", None)
    if targets is None and dm is not None:
        targets = getattr(getattr(dm.train_dataloader(), "dataset", None), "targets", None)
    if targets is None:
        raise ValueError(
            "finetune.strategy auto counts the training images per class, but the training data has no "
            f"`targets`; name a strategy instead: {', '.join(s for s in STRATEGIES if s != 'auto')}"
        )
    return targets


def _base_lr(optimizer) -> float:
    """The optimizer's lr before group scales and schedules (from a group with ``lr_scale`` > 0)."""
    for g in optimizer.param_groups:
        scale = g.get("lr_scale", 1.0)
        if scale > 0:
            return g.get("base_lr", g["lr"]) / scale
    return optimizer.defaults["lr"]


def _rewrap_ddp(trainer) -> None:
    """Wrap the model in a new DDP after a change of trainable parameters: DDP registers, when it wraps, the
    parameters that require grad, and would never synchronise the others' gradients (torch's own advice)."""
    from torch.nn.parallel import DistributedDataParallel

    strategy = trainer.strategy
    old = strategy.model
    if not isinstance(old, DistributedDataParallel) or not hasattr(strategy, "configure_ddp"):
        return
    old._remove_autograd_hooks()  # the old wrapper's gradient hooks must not fire any more
    strategy.model = strategy.lightning_module
    strategy.configure_ddp()
