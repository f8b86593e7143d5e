"""Fine-tuning policy: which strategy, the linear probe that starts it, and a budget that fits the data.

The mechanism (freezing, joining param groups, resume, DDP) is :class:`callbacks.finetune_base.StageFinetuning`;
the pure rules (plans, ``auto``'s choice, the budget) are :mod:`callbacks.finetune_strategies`; the probe's
fit is :mod:`zoo.probe`. This callback puts them in order:

1. ``setup``: resolve the strategy, size the run (batch and epochs, when the user left them unset), freeze.
2. epoch 0, when the strategy starts from pretrained features: the linear probe. The frozen backbone runs
   once over the training images in eval mode, the head is fitted to convergence, and the epoch takes no
   gradient step (``ImageClassifier.hold_steps``); its validation and checkpoint are the probe's. ``linear``
   ends there.
3. later epochs: the planned stages join, and the fitted head trains at the backbone's reduced lr (nothing in
   the network is new any more; a head at the full lr of a random one undoes the probe within an epoch).
   ``auto`` checks after a short fine-tune that it beats the probe on the validation metric, and stops
   (keeping the probe's checkpoint as the best) when it does not.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from callbacks.finetune_base import StageFinetuning
from callbacks.finetune_strategies import (
    DESCRIPTIONS,
    STRATEGIES,
    Strategy,
    budget,
    choose,
    images_per_class,
    plan,
)
from zoo import freeze as fz
from zoo.errors import did_you_mean
from zoo.probe import ProbeFit, extract_features, fit_head, load_head


class FineTuning(StageFinetuning):
    """lr_backbone = backbone_lr_scale × lr_head; little data → a linear probe on top, more → more layers.

    Args:
        strategy: ``linear`` (the probe alone), ``freeze_unfreeze`` (probe, then the backbone from
            ``unfreeze_epoch``), ``full`` (probe, then every layer), ``gradual`` (probe, then stages one by one),
            ``auto`` (picks one from the data and says why) or ``none`` (off).
        unfreeze_epoch: ``freeze_unfreeze``/``gradual``: the epoch the (top) stage joins; epoch 0 is the probe's.
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
        epochs: training epochs after the probe when the trainer has no limit of its own
            (``trainer.max_epochs: -1`` and no ``max_steps``: "let the budget decide").
        min_steps: with that, at least this many optimizer steps after the probe (small sets get more epochs).
        batch_size: the largest batch per device when ``data.batch_size`` is unset (never more than a device's
            share of the training images).
        auto_full_from: ``auto`` picks ``full`` from this many training images per class (median).
        trial: ``auto``: the share of the training epochs after which fine-tuning must have beaten the probe on
            the checkpoint's validation metric, or the run stops with the probe as its best checkpoint.
    """

    def __init__(
        self,
        strategy: Strategy = "none",
        unfreeze_epoch: int = 1,
        every: int = 1,
        stages: int | None = None,
        warmup: float = 1.0,
        keep_bn_eval: bool = False,
        probe: bool = True,
        probe_views: int = 1,
        probe_C: list[float] | None = None,
        probe_folds: int = 5,
        probe_max_images: int = 20000,
        epochs: int = 10,
        min_steps: int = 300,
        batch_size: int = 32,
        auto_full_from: int = 1000,
        trial: float = 0.5,
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
            ("epochs", epochs, 1),
            ("min_steps", min_steps, 0),
            ("batch_size", batch_size, 1),
            ("auto_full_from", auto_full_from, 1),
        ):
            if value < low:
                raise ValueError(f"finetune.{key}={value!r} must be ≥ {low}")
        if not 0 < trial <= 1:
            raise ValueError(f"finetune.trial={trial!r} must be in (0, 1]")
        self.strategy, self.unfreeze_epoch, self.every, self.max_stages = (
            strategy,
            unfreeze_epoch,
            every,
            stages,
        )
        self.probe, self.probe_views, self.probe_C = probe, probe_views, probe_C
        self.probe_folds, self.probe_max_images = probe_folds, probe_max_images
        self.epochs, self.min_steps, self.batch_size = epochs, min_steps, batch_size
        self.auto_full_from, self.trial = auto_full_from, trial
        self.resolved: str | None = None  # the strategy in use (``auto`` resolved)
        self.probing = False  # this run starts with a probe epoch
        self.probed: dict | None = None  # the probe's result, once fitted
        self.trial_epochs = 0  # ``auto``: epochs of fine-tuning that must beat the probe (0: no trial)
        self.probe_value: float | None = None  # the probe epoch's validation metric
        self.decided = False  # ``auto``'s trial is over

    # --- set-up ------------------------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.strategy == "none":
            return
        self.stages = dict(pl_module.backbone_stages())
        dm = trainer.datamodule
        targets = _train_targets(dm)
        validated = dm.has_split("val") if hasattr(dm, "has_split") else True
        self.resolved = self._resolve(pl_module, targets, validated)
        self.probing = self._can_probe(pl_module, dm)
        joins = plan(self.resolved, list(self.stages), self.unfreeze_epoch, self.every, self.max_stages)
        if not pl_module.can_add_param_groups() and any(j.epoch > 0 for j in joins):
            raise ValueError(
                f"finetune.strategy={self.resolved} adds param groups mid-run, but L-BFGS takes one group: "
                "use another optimizer, or finetune.strategy full / linear"
            )
        self._size_run(trainer, dm, len(targets))
        self._check_length(trainer, joins)
        if self.probing:
            pl_module.hold_steps(1)
        self.apply_plan(trainer, pl_module, joins)
        self._report(pl_module)

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
        strategy, why = choose(per_class, pretrained, validated, self.auto_full_from)
        rank_zero_info(f"Fine-tuning strategy auto → {strategy}: {why}.")
        return strategy

    def _can_probe(self, pl_module, dm) -> bool:
        starts_frozen = self.resolved in ("linear", "freeze_unfreeze", "gradual")
        wanted = (
            self.probe and (starts_frozen or pl_module.has_pretrained_weights) or self.resolved == "linear"
        )
        if wanted and not hasattr(dm, "feature_dataloader"):
            rank_zero_warn(
                f"{type(dm).__name__} has no feature_dataloader, so the new head cannot start as a linear probe; "
                "it trains by gradient steps instead"
            )
            return False
        return wanted

    def _size_run(self, trainer, dm, images: int) -> None:
        """Batch and epochs from :func:`~callbacks.finetune_strategies.budget`, where the user set neither."""
        given_batch = (getattr(dm, "hparams", None) or {}).get("batch_size", getattr(dm, "batch_size", None))
        unlimited = trainer.max_epochs == -1 and trainer.max_steps == -1
        probe_only = self.resolved == "linear" and self.probing
        sized = budget(
            images,
            trainer.world_size,
            batch_size=given_batch,
            epochs=None if unlimited else trainer.max_epochs,
            default_batch=self.batch_size,
            default_epochs=self.epochs,
            min_steps=self.min_steps,
            probe=self.probing,
            train=not probe_only,
        )
        if given_batch is None:
            dm.batch_size = sized.batch_size  # the attribute Lightning's batch-size finder sets too
        if probe_only and not unlimited and trainer.max_epochs != 1:
            rank_zero_info(
                f"finetune.strategy linear: the probe is the training: 1 epoch, not {trainer.max_epochs}"
            )
        if unlimited or probe_only:
            trainer.fit_loop.max_epochs = sized.epochs
        trainer.log_every_n_steps = min(trainer.log_every_n_steps, sized.steps_per_epoch)
        rank_zero_info(f"Budget: {sized.why}.")
        if self.strategy == "auto" and self.probing and not probe_only and trainer.max_epochs > 1:
            self.trial_epochs = max(1, round(self.trial * (trainer.max_epochs - 1)))

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
            if j.epoch > 0 and j.epoch + self.warmup > epochs:
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

    # --- epoch 0: the linear probe ------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.probing and self.probed is None and trainer.current_epoch == 0:
            self._probe(trainer, pl_module)
        super().on_train_epoch_start(trainer, pl_module)

    def _probe(self, trainer, pl_module) -> None:
        dm, head = trainer.datamodule, pl_module.classifier()
        rank, world = trainer.global_rank, trainer.world_size
        targets = np.asarray(_train_targets(dm))
        chosen = _stratified_sample(targets, self.probe_max_images, seed=0)
        was_training = pl_module.training
        pl_module.eval()
        try:
            rows = [
                self._features(trainer, pl_module, head, dm, "train", chosen, view > 0, rank, world)
                for view in range(self.probe_views)
            ]
            val = None
            if dm.has_split("val"):
                val = self._features(trainer, pl_module, head, dm, "val", None, False, rank, world)
        finally:
            pl_module.train(was_training)
        x = np.concatenate([r[0] for r in rows])
        y = np.concatenate([r[1] for r in rows])
        groups = np.concatenate([r[2] for r in rows])
        fit: ProbeFit | None = None
        if trainer.is_global_zero:
            vx, vy = (val[0], val[1]) if val is not None else (None, None)
            Cs = self.probe_C or None
            kw = {"Cs": Cs} if Cs else {}
            fit = fit_head(x, y, len(head.weight), vx, vy, groups=groups, folds=self.probe_folds, **kw)
        fit = trainer.strategy.broadcast(fit, src=0)  # every rank loads the same head
        load_head(head, fit)
        self.probed = {"C": float(fit.C), "score": float(fit.score), "loss": float(fit.loss), "how": fit.how}
        if self.resolved != "linear":  # nothing is new any more: the fitted head trains at the backbone's lr
            self.rescale_group(trainer, "head", pl_module.backbone_lr_scale)
        rank_zero_info(fit.describe(len(chosen), self.probe_views) + ".")

    @staticmethod
    def _features(trainer, pl_module, head, dm, split, indices, augment, rank, world):
        """(features, labels, image ids) of ``split`` from every rank, in image order."""
        loader = dm.feature_dataloader(split, augment=augment, rank=rank, world_size=world, indices=indices)
        batches = (trainer.strategy.batch_to_device(b) for b in loader)
        with trainer.precision_plugin.forward_context():
            x, y = extract_features(pl_module, head, batches)
        ids = np.asarray(loader.dataset.indices, dtype=np.int64)
        if world > 1:
            x, y, ids = (_gather(trainer, a) for a in (x, y, ids))
        order = np.argsort(ids, kind="stable")
        return x[order], y[order], ids[order]

    # --- auto: does fine-tuning beat the probe? ----------------------------------------------------------------
    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.trial_epochs or self.decided:
            return
        ckpt = trainer.checkpoint_callback
        monitor = getattr(ckpt, "monitor", None)
        value = trainer.callback_metrics.get(monitor) if monitor else None
        if value is None:
            return
        value, epoch = float(value), trainer.current_epoch
        if epoch == 0:
            self.probe_value = value
            return
        better = value < self.probe_value if ckpt.mode == "min" else value > self.probe_value
        said = f"{monitor} {value:.4f} against the probe's {self.probe_value:.4f}"
        if better:
            self.decided = True
            rank_zero_info(
                f"Fine-tuning auto: after {epoch} epoch(s) of fine-tuning, {said}: fine-tuning goes on."
            )
        elif epoch >= self.trial_epochs:
            self.decided = True
            trainer.should_stop = True
            rank_zero_info(
                f"Fine-tuning auto → linear: after {epoch} epoch(s) of fine-tuning, {said}: fine-tuning does not "
                "beat the probe, so it stops here and the probe's checkpoint (epoch 0) stays the best."
            )

    # --- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "strategy": self.resolved,
            "probed": self.probed,
            "probe_value": self.probe_value,
            "decided": self.decided,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if self.strategy == "none" or not self.stages:
            return
        saved = state_dict.get("strategy")
        if saved != self.resolved:
            raise ValueError(
                f"the checkpoint was fine-tuned with strategy {saved!r}, this run resolves to {self.resolved!r}: "
                f"resume with --finetune.strategy {saved}"
            )
        super().load_state_dict(state_dict)
        self.probed = state_dict.get("probed")
        self.probe_value = state_dict.get("probe_value")
        self.decided = bool(state_dict.get("decided", False))


def _train_targets(dm):
    """Labels of the training split (``auto`` and the budget count images from them)."""
    split = getattr(dm, "splits", {}).get("train") if dm is not None else None
    targets = getattr(split, "targets", None)
    if targets is None and dm is not None:
        targets = getattr(getattr(dm.train_dataloader(), "dataset", None), "targets", None)
    if targets is None:
        raise ValueError(
            "fine-tuning counts the training images per class, but the training data has no `targets`; "
            "use a data module whose training split lists its labels (zoo.data.ImageFolderDataModule)"
        )
    return list(targets)


def _stratified_sample(targets: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Positions of at most ``limit`` of the images, each class keeping its share (all of them if fewer)."""
    if len(targets) <= limit:
        return np.arange(len(targets))
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(np.arange(len(targets)), train_size=limit, stratify=targets, random_state=seed)
    return np.sort(kept)


def _gather(trainer, array: np.ndarray) -> np.ndarray:
    """Rows of ``array`` from every rank (ranks may hold different numbers of rows)."""
    strategy = trainer.strategy
    device = strategy.root_device
    t = torch.as_tensor(array, device=device)
    sizes = strategy.all_gather(torch.tensor([len(t)], device=device)).flatten().tolist()
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[: len(t)] = t
    everyone = strategy.all_gather(padded)
    return torch.cat([everyone[r, :n] for r, n in enumerate(sizes)]).cpu().numpy()
