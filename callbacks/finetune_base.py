"""The mechanism of fine-tuning by stages: freeze, unfreeze into new param groups on time, keep frozen BatchNorm
in eval, warm joining groups up, resume, and re-wrap DDP. *Which* stages join *when* is a subclass's ``plan``.

Split the way Lightning's ``BaseFinetuning`` (mechanism) and ``BackboneFinetuning`` (policy) are, but written
here because ``BaseFinetuning`` fails at three things: its frozen BatchNorm layers normalise with batch
statistics (Lightning issue 15062), a resumed run re-freezes what was unfrozen (issue 21901), and under DDP the
layers it unfreezes are never synchronised, since DDP only registers the parameters that required grad when it
wrapped the model (issue 20340). Here freezing keeps BatchNorm in eval mode (:mod:`zoo.training.freeze`), a resumed run
replays the joins before the optimizer state is loaded, and DDP wraps the model again after each join.

The model is reached only through ``ImageClassifier``'s fine-tuning interface: ``backbone_stages()``,
``new_param_groups()``, ``backbone_lr_scale``.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from callbacks.finetune_strategies import Join
from callbacks.lr_schedule import write_lrs
from callbacks.warmup import LinearWarmup
from zoo.compat import ignore_eval_mode_warning, rewrap_ddp
from zoo.training import freeze as fz


class StageFinetuning(Callback):
    """Freeze the backbone stages a plan does not train from the start; join the others as param groups at
    lr × ``backbone_lr_scale`` on their epoch, their lr rising from 0 over ``warmup`` epochs.

    Args:
        warmup: epochs over which a joining group's lr rises linearly from 0 (0: at once).
        keep_bn_eval: keep the BatchNorm layers of unfrozen stages in eval mode too (the pretrained running
            statistics; for small batches). Their affine weights still train.
    """

    def __init__(self, warmup: float = 1.0, keep_bn_eval: bool = False):
        if not warmup >= 0:
            raise ValueError(f"finetune.warmup={warmup!r} must be ≥ 0 epochs")
        self.warmup, self.keep_bn_eval = float(warmup), keep_bn_eval
        self.stages: dict = {}  # backbone stage name -> module, top-down
        self.joins: list[Join] = []  # the plan
        self.joined: list[str] = []  # names of the joins applied, in order
        self._warmups: list[LinearWarmup] = []
        self._replay: list[str] = []

    def apply_plan(self, trainer, pl_module, joins: list[Join]) -> None:
        """Freeze every stage that no join trains from the start, and ready a warmup per later join."""
        self.joins = joins
        at_start = {s for j in joins if j.at_start for s in j.stages}
        for name, stage in self.stages.items():
            fz.unfreeze(stage, train=pl_module.training)
            if name not in at_start:
                fz.freeze(stage)
            elif self.keep_bn_eval:
                fz.freeze_norm_stats(stage)
        self.joined = [j.name for j in joins if j.at_start]
        if len(at_start) < len(self.stages) or self.keep_bn_eval:  # frozen stages, BatchNorm: eval on purpose
            ignore_eval_mode_warning()
        trainer.callbacks[:] = [c for c in trainer.callbacks if c not in self._warmups]
        self._warmups = [
            LinearWarmup(self.warmup, start=j.epoch, groups=[j.name])
            for j in joins
            if not j.at_start and self.warmup
        ]
        trainer.callbacks.extend(self._warmups)  # LRSchedules compose by product: order does not matter

    def on_fit_start(self, trainer, pl_module) -> None:
        """On resume: join what the checkpoint's run had joined, before Lightning loads the optimizer state
        (whose param groups must then match in number and order)."""
        for name in self._replay:
            self.join(trainer, pl_module, self._by_name(name))
        self._replay = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        for j in self.joins:
            if j.epoch <= trainer.current_epoch and j.name not in self.joined:
                self.join(trainer, pl_module, j)
                write_lrs(trainer)  # the new group's lr from this very step (its warmup starts at 0)
                ramp = f", lr warming up over {self.warmup:g} epochs" if self.warmup else ""
                rank_zero_info(
                    f"Epoch {trainer.current_epoch}: unfroze {', '.join(j.stages)} as param group {j.name!r} "
                    f"(lr × {pl_module.backbone_lr_scale:g}{ramp})"
                )

    def join(self, trainer, pl_module, join: Join) -> None:
        """Unfreeze ``join``'s stages and add them to the optimizer as the group ``join.name``."""
        for name in join.stages:
            fz.unfreeze(self.stages[name], train=pl_module.training)
            if self.keep_bn_eval:
                fz.freeze_norm_stats(self.stages[name])
        optimizer = trainer.optimizers[0]
        params = [p for n in join.stages for p in self.stages[n].parameters()]
        for group in pl_module.new_param_groups(join.name, params, base_lr(optimizer)):
            optimizer.add_param_group(group)
        self.joined.append(join.name)
        rewrap_ddp(trainer)

    @staticmethod
    def rescale_group(trainer, name: str, scale: float) -> None:
        """Set the param group ``name`` (and ``name/no_decay``) to lr × ``scale``: its base lr, which the lr
        schedules multiply from the next step they write on."""
        optimizer = trainer.optimizers[0]
        lr = base_lr(optimizer)
        for group in optimizer.param_groups:
            if group.get("name") in (name, f"{name}/no_decay"):
                group["lr_scale"], group["base_lr"], group["lr"] = scale, lr * scale, lr * scale

    def _by_name(self, name: str) -> Join:
        for j in self.joins:
            if j.name == name:
                return j
        raise ValueError(
            f"the checkpoint's fine-tuning unfroze the group {name!r}, which this run's plan "
            f"({[j.name for j in self.joins]}) does not have: resume with the same model and finetune options"
        )

    def state_dict(self) -> dict:
        return {"joined": list(self.joined), "stages": list(self.stages)}

    def load_state_dict(self, state_dict: dict) -> None:
        stages = state_dict.get("stages")
        if self.stages and stages is not None and list(stages) != list(self.stages):
            raise ValueError(
                f"the checkpoint's backbone has the stages {stages}, this model {list(self.stages)}: resume with "
                "the model the checkpoint was trained with"
            )
        self._replay = [n for n in state_dict.get("joined", []) if n not in self.joined]


def base_lr(optimizer) -> float:
    """The optimizer's lr before group scales and schedules (from a group with ``lr_scale`` > 0)."""
    for g in optimizer.param_groups:
        scale = g.get("lr_scale", 1.0)
        if scale > 0:
            return g.get("base_lr", g["lr"]) / scale
    return optimizer.defaults["lr"]
