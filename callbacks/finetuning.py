"""Fine-tuning policy: which strategy, the linear probe that starts it, a budget that fits the data, and when to
stop.

The mechanism (freezing, joining param groups, resume, DDP) is :class:`callbacks.finetune_base.StageFinetuning`;
the pure rules (plans, ``auto``'s choice, the budget, the trial's verdict, patience) are
:mod:`callbacks.finetune_strategies`; the probe phase is :mod:`callbacks.probe_phase`. This callback puts them in
order:

1. ``setup``: resolve the strategy, size the run (batch, epochs, how often to validate), freeze.
2. ``on_fit_start``, when the strategy starts from pretrained features: the linear probe, a phase of its own
   before the first epoch. Its validation scores come from the features it was fitted on, and it is written as
   ``probe.ckpt``, the first candidate for the best checkpoint. ``auto`` ends the run there when the probe has
   left a fine-tune nothing the validation split could show (no validation split, the probe at the ceiling, or
   fewer errors than a gain needs); a run that ends with the probe (``linear``) tries classifiers on lower stages
   too. Otherwise the fitted head trains on at the backbone's reduced lr.
3. the training epochs: the planned stages join on time; after each validation, patience on the validation loss
   and top-1 (the probe's scores count as the first) stops a fine-tune that has stopped improving, and the best
   checkpoint stays the probe's when nothing beat it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from callbacks.best_checkpoint import BestCheckpoint
from callbacks.finetune_base import StageFinetuning
from callbacks.finetune_strategies import (
    DESCRIPTIONS,
    STRATEGIES,
    Plateau,
    Strategy,
    budget,
    choose,
    images_per_class,
    plan,
    trial_verdict,
)
from callbacks.probe_phase import choose_stages, run_probe, scores
from zoo.errors import ZooError, did_you_mean
from zoo.protocols import FeatureData, FineTunable, SplitData
from zoo.training import freeze as fz
from zoo.training.probe import TOP


class FineTuning(StageFinetuning):
    """lr_backbone = backbone_lr_scale × lr_head; little data → a linear probe on top, more → more layers.

    The run's length and batch are the trainer's and the data's (``--trainer.max_epochs`` or ``max_steps``,
    ``--data.batch_size``); left unset (``max_epochs: -1``, no batch size) they are sized to the data
    (:func:`~callbacks.finetune_strategies.budget`).

    Args:
        strategy: ``linear`` (the probe alone), ``freeze_unfreeze`` (probe, then the backbone from
            ``unfreeze_epoch``, warmed up), ``full`` (probe, then every layer), ``gradual`` (probe, then stages one
            by one), ``auto`` (picks one from the data and says why) or ``none`` (off).
        unfreeze_epoch: ``freeze_unfreeze``/``gradual``: the training epoch the (top) stage joins; None: 0 after a
            probe (it trained the head), 1 without one.
        every: ``gradual``: epochs between two stages joining.
        stages: ``gradual``: how many backbone stages to unfreeze, from the top (None: all, down to the stem).
        warmup: epochs over which a joining group's lr rises linearly from 0 (0: at once).
        keep_bn_eval: keep the BatchNorm layers of unfrozen stages in eval mode too (their affine weights train).
        probe: start from a linear probe whenever the strategy starts on pretrained features.
        probe_views: views of each training image the probe sees: 1 is the plain (eval) view; each further one
            is a pass through the training augmentation.
        probe_C: the probe's grid of C (inverse L2 strength); None: 1e-3 … 1e3.
        probe_folds: k of the k-fold cross-validation that chooses C when there is no validation split.
        probe_max_images: at most this many training images (a stratified sample) feed the probe.
        probe_stages: a run that ends with the probe also tries classifiers on lower stages' pooled features
            (each alone and beside the top features) and keeps the best by the same validation.
        patience: stop fine-tuning after this many validations in a row with neither a lower val/loss (by 1 %) nor
            a higher val/top1 than the best so far, the probe's included (0: never).
    """

    def __init__(
        self,
        strategy: Strategy = "none",
        unfreeze_epoch: int | None = None,
        every: int = 1,
        stages: int | None = None,
        warmup: float = 1.0,
        keep_bn_eval: bool = False,
        probe: bool = True,
        probe_views: int = 1,
        probe_C: list[float] | None = None,
        probe_folds: int = 5,
        probe_max_images: int = 20000,
        probe_stages: bool = True,
        patience: int = 3,
    ):
        super().__init__(warmup, keep_bn_eval)
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown finetune.strategy {strategy!r}{did_you_mean(strategy, STRATEGIES, 1)}; choose one of "
                f"{', '.join(STRATEGIES)}"
            )
        for key, value, low in (
            ("probe_views", probe_views, 1),
            ("probe_folds", probe_folds, 2),
            ("probe_max_images", probe_max_images, 1),
            ("patience", patience, 0),
        ):
            if value < low:
                raise ValueError(f"finetune.{key}={value!r} must be ≥ {low}")
        self.strategy, self.unfreeze_epoch, self.every, self.max_stages = (
            strategy,
            unfreeze_epoch,
            every,
            stages,
        )
        self.probe, self.probe_views, self.probe_C = probe, probe_views, probe_C
        self.probe_folds, self.probe_max_images, self.probe_stages = (
            probe_folds,
            probe_max_images,
            probe_stages,
        )
        self.patience = patience
        self.resolved: str | None = None  # the strategy in use (``auto`` resolved)
        self.probing = False  # this run starts with the probe phase
        self.probed: dict | None = None  # the probe's result, once fitted (kept in checkpoints)
        self.probed_now = False  # this process fitted the probe (a run that trains no step still trained)
        self.plateau: Plateau | None = None  # patience over the validations after the probe

    # --- set-up ------------------------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.strategy == "none":
            return
        dm = trainer.datamodule
        if not isinstance(pl_module, FineTunable):
            raise ZooError(
                f"fine-tuning needs a model with a backbone and a head (zoo.ImageClassifier), not {type(pl_module).__name__}"
            )
        if not isinstance(dm, SplitData):
            raise ZooError(
                f"fine-tuning counts the training images per class, but {type(dm).__name__} does not list them "
                "(has_split, split_targets): use a data module such as zoo.data.ImageFolderDataModule"
            )
        self.stages = dict(pl_module.backbone_stages())
        targets = dm.split_targets("train")
        self.resolved = self._resolve(pl_module, targets, dm.has_split("val"))
        self.probing = self._can_probe(pl_module, dm)
        joins = self._plan()
        if not pl_module.can_add_param_groups() and any(not j.at_start for j in joins):
            raise ValueError(
                f"finetune.strategy={self.resolved} adds param groups mid-run, but L-BFGS takes one group: "
                "use another optimizer, or finetune.strategy full / linear"
            )
        self._size_run(trainer, dm, len(targets))
        self._check_length(trainer, joins)
        self.apply_plan(trainer, pl_module, joins)
        self._report(pl_module)

    def _plan(self):
        first = self.unfreeze_epoch if self.unfreeze_epoch is not None else (0 if self.probing else 1)
        return plan(self.resolved, list(self.stages), first, self.every, self.max_stages, probe=self.probing)

    def _resolve(self, pl_module, targets, validated: bool) -> str:
        pretrained = pl_module.has_pretrained_weights
        if self.strategy != "auto":
            if not pretrained and self.strategy in ("linear", "freeze_unfreeze", "gradual"):
                rank_zero_warn(
                    f"finetune.strategy={self.strategy} freezes layers of a model without pretrained weights "
                    "(random features): give --model.pretrained true or --model.pretrained_path FILE, or use full"
                )
            return self.strategy
        per_class = images_per_class(targets)
        strategy, why = choose(per_class, pretrained, validated)
        rank_zero_info(f"Fine-tuning strategy auto → {strategy}: {why}.")
        return strategy

    def _can_probe(self, pl_module, dm) -> bool:
        starts_frozen = self.resolved in ("linear", "freeze_unfreeze", "gradual")
        wanted = (
            self.probe and (starts_frozen or pl_module.has_pretrained_weights) or self.resolved == "linear"
        )
        if wanted and not isinstance(dm, FeatureData):
            rank_zero_warn(
                f"{type(dm).__name__} has no feature_dataloader, so the new head cannot start as a linear probe; "
                "it trains by gradient steps instead"
            )
            return False
        return wanted

    def _size_run(self, trainer, dm, images: int) -> None:
        """Batch, epochs and how often to validate, from :func:`~callbacks.finetune_strategies.budget`, where the
        user set neither; said in one line with the device."""
        given_batch = (getattr(dm, "hparams", None) or {}).get("batch_size")
        unlimited = trainer.max_epochs == -1 and trainer.max_steps == -1
        probe_only = self.resolved == "linear" and self.probing
        sized = budget(
            images,
            trainer.world_size,
            batch_size=given_batch,
            epochs=None if unlimited else trainer.max_epochs,
            max_steps=None if trainer.max_steps == -1 else trainer.max_steps,
            train=not probe_only,
        )
        if given_batch is None:
            dm.batch_size = sized.batch_size  # the attribute Lightning's batch-size finder sets too
        if probe_only and not unlimited and trainer.max_epochs not in (0, 1):
            rank_zero_info(
                f"finetune.strategy linear: the probe is the training, not {trainer.max_epochs} epochs"
            )
        if trainer.max_epochs == -1 or probe_only:
            trainer.fit_loop.max_epochs = sized.epochs
        if sized.val_every > 1 and trainer.check_val_every_n_epoch == 1:
            trainer.check_val_every_n_epoch = sized.val_every  # checkpoints and the loss curves follow it
        trainer.log_every_n_steps = min(trainer.log_every_n_steps, sized.steps_per_epoch)
        rank_zero_info(f"Budget: {sized.why}; on {device_name(trainer)}.")

    def _check_length(self, trainer, joins) -> None:
        epochs = trainer.max_epochs
        if epochs is None or epochs < 0:
            return
        for j in joins:
            if j.epoch >= epochs:
                raise ValueError(
                    f"finetune.strategy={self.resolved} unfreezes {j.name} at epoch {j.epoch}, but "
                    f"trainer.max_epochs={epochs}: lower finetune.unfreeze_epoch (or every/stages) or train longer"
                )
            if not j.at_start and j.epoch + self.warmup > epochs:
                raise ValueError(
                    f"finetune.warmup={self.warmup:g} epochs after unfreezing {j.name} at epoch {j.epoch} runs "
                    f"past trainer.max_epochs={epochs}: shorten the warmup or train longer"
                )

    def _report(self, pl_module) -> None:
        frozen = [n for n, s in self.stages.items() if fz.is_frozen(s)]
        scale = pl_module.backbone_lr_scale
        rank_zero_info(
            f"Fine-tuning strategy {self.resolved}: {DESCRIPTIONS[self.resolved]}. Frozen now: "
            f"{len(frozen)} of {len(self.stages)} backbone stages; backbone lr × {scale:g}."
        )
        if self.joins and scale == 1.0 and pl_module.has_pretrained_weights:
            rank_zero_warn(
                "the pretrained backbone trains at the head's lr; the lectures (docs/notes.md) advise a smaller lr for pretrained "
                "layers: set --model.backbone_lr_scale 0.1"
            )
        elif self.joins and scale < 1.0 and not pl_module.has_pretrained_weights:
            rank_zero_warn(
                f"model.backbone_lr_scale={scale:g} slows down layers that have no pretrained weights: "
                "set --model.backbone_lr_scale 1 to train a model from scratch"
            )

    # --- the probe phase -----------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)  # a resumed run joins what it had joined
        if self.probing and self.probed is None:
            self._probe(trainer, pl_module)
        elif self.resolved == "linear" and self.probed is not None:  # resumed: the probe was the whole run
            self.apply_plan(trainer, pl_module, [])
            self._end_at_probe(trainer)

    def _probe(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        chosen = _stratified_sample(np.asarray(dm.split_targets("train")), self.probe_max_images, seed=0)
        taps = pl_module.stage_taps() if self.probe_stages else []
        options = {"Cs": self.probe_C, "folds": self.probe_folds}
        result = run_probe(trainer, pl_module, dm, chosen, self.probe_views, taps=taps, **options)
        rank_zero_info(result.fit.describe(result.images, self.probe_views) + ".")
        val_images = len(result.val) if result.val is not None else 0
        if self.strategy == "auto" and self.resolved != "linear":
            self._verdict(trainer, pl_module, result.val_top1, val_images)
        fit, top1, loss = result.fit, result.val_top1, result.val_loss
        if self.resolved == "linear" and taps:  # the probe is the model: try classifiers on lower stages too
            choice = choose_stages(trainer, pl_module, result, **options)
            rank_zero_info(f"Stage probe: {'+'.join(choice.stages)}: {choice.why}.")
            fit = choice.fit
            if val_images and choice.stages != (TOP,):
                val = np.concatenate([result.val.blocks[n] for n in choice.stages], axis=1)
                top1, loss = scores(fit, val, result.val.labels)
        self.probed = {"C": float(fit.C), "score": float(fit.score), "loss": float(fit.loss), "how": fit.how}
        self.probed |= {"val_top1": top1, "val_loss": loss, "val_images": val_images}
        self.probed_now = True
        if val_images:  # the probe's scores in the run's logs too: a row at step 0, before any epoch
            for logger in trainer.loggers:
                logger.log_metrics({"val/loss": loss, "val/top1": top1}, step=0)
        self.save_probe(trainer, {"val/top1": top1, "val/loss": loss})
        if self.resolved == "linear":
            self._end_at_probe(trainer)
            return
        # nothing in the network is new any more: the fitted head trains at the backbone's lr
        self.rescale_group(trainer, "head", pl_module.backbone_lr_scale)
        if val_images and self.patience:
            self.plateau = Plateau(self.patience)
            self.plateau.update(loss, top1, 0)

    @staticmethod
    def _end_at_probe(trainer) -> None:
        """Nothing to train: the fit ends before its first epoch, without a sanity check."""
        trainer.num_sanity_val_steps = 0
        trainer.should_stop = True

    def _verdict(self, trainer, pl_module, top1: float | None, val_images: int) -> None:
        """``auto`` after the probe: the probe is the model when the validation split cannot show a fine-tune
        doing better (:func:`~callbacks.finetune_strategies.trial_verdict`)."""
        why = trial_verdict(top1, val_images) if val_images else "no validation split to show a gain on"
        if why:
            rank_zero_info(f"Fine-tuning auto → linear: {why}; the probe is the model.")
            self.resolved = "linear"
            self.apply_plan(trainer, pl_module, [])

    def save_probe(self, trainer, metrics: dict[str, float | None]) -> None:
        """``probe.ckpt`` beside the run's checkpoints: a whole checkpoint (fit resumes from it, test, predict and
        export read it), and the best checkpoint's first candidate, scored by the probe's validation. A trainer
        without checkpoints (``zoo lr-find``'s) writes none."""
        ckpt = trainer.checkpoint_callback
        if ckpt is None or not ckpt.dirpath:
            return
        path = str(Path(ckpt.dirpath) / "probe.ckpt")
        trainer.save_checkpoint(path, weights_only=False)
        if isinstance(ckpt, BestCheckpoint):
            ckpt.add_candidate(trainer, path, metrics)

    # --- after each validation: patience ---------------------------------------------------------------------
    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.plateau is None or trainer.should_stop:
            return
        metrics = trainer.callback_metrics
        if "val/loss" not in metrics or "val/top1" not in metrics:
            return
        loss, top1, step = float(metrics["val/loss"]), float(metrics["val/top1"]), trainer.global_step
        self.plateau.update(loss, top1, step)
        if self.plateau.stalled:
            trainer.should_stop = True
            best = self.plateau
            since = "the probe" if best.best_step == 0 else f"step {best.best_step}"
            rank_zero_info(
                f"Fine-tuning stopped at step {step}: {best.waited} validations in a row without a lower val/loss "
                f"(best {best.best_loss:.3g}) or a higher val/top1 (best {best.best_top1:.4f}) than {since}."
            )

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        plateau = None if self.plateau is None else dict(self.plateau.__dict__)
        return {**super().state_dict(), "strategy": self.resolved, "probed": self.probed, "plateau": plateau}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.strategy == "none" or not self.stages:
            return
        saved = state_dict.get("strategy")
        if self.strategy == "auto" and saved == "linear" and self.resolved != saved:
            self.resolved = saved  # auto ended at the probe in the run that wrote the checkpoint
        elif saved != self.resolved:
            raise ValueError(
                f"the checkpoint was fine-tuned with strategy {saved!r}, this run resolves to {self.resolved!r}: "
                f"resume with --finetune.strategy {saved}"
            )
        super().load_state_dict(state_dict)
        self.probed = state_dict.get("probed")
        plateau = state_dict.get("plateau")
        self.plateau = Plateau(**plateau) if plateau else None


def device_name(trainer) -> str:
    """The device a run trains on, as the budget line names it: ``CPU (2 threads)``, ``NVIDIA H100 × 4``."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        threads = torch.get_num_threads()
        name = f"CPU ({threads} thread{'s' if threads != 1 else ''})"
    else:
        name = device.type.upper()
    return name + (f" × {trainer.world_size} processes" if trainer.world_size > 1 else "")


def _stratified_sample(targets: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Positions of at most ``limit`` of the images, each class keeping its share (all of them if fewer)."""
    if len(targets) <= limit:
        return np.arange(len(targets))
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(np.arange(len(targets)), train_size=limit, stratify=targets, random_state=seed)
    return np.sort(kept)
