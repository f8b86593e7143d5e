"""``ImageClassifier``: the one LightningModule of the zoo (model, loss, metrics, optimizer)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric

from zoo.errors import ZooError
from zoo.models.backbones import model_data_config, model_stages
from zoo.models.registry import create_model
from zoo.models.stage_head import TOP, StageHead, stage_features
from zoo.models.stage_head import stage_taps as network_taps
from zoo.runtime.accelerate import channels_last_input, compile_module, to_channels_last
from zoo.training import freeze
from zoo.training.guard import NonFiniteGuard
from zoo.training.metrics import TopKAccuracy
from zoo.training.mixup import build_mixup, mix_batch, soft_target_cross_entropy
from zoo.training.optim import (
    OptimizerConfig,
    build_optimizer,
    build_param_groups,
    global_batch_size,
    warn_lbfgs_noise,
)
from zoo.training.probe import load_head
from zoo.training.tta import view_scores


class ImageClassifier(LightningModule):
    """Classify images with any zoo model (``arch``: a zoo name or ``timm/<name>``).

    The loss is softmax cross-entropy, L = −Σ_j y_j log p_j, whose gradient w.r.t. the logits is p − y.
    Logs ``train/loss``, ``train/top1``, ``train/top5``, ``val/loss``, ``val/top1``, ``val/top5`` and ``test/top1``.

    Args:
        arch: model name, e.g. ``convnet``, ``resnet18`` or ``timm/efficientnet_lite0``.
        num_classes: classes of the head (linked from the data module by the CLI).
        in_chans: input channels (linked from the data module by the CLI).
        pretrained: load pretrained weights (timm backbones).
        pretrained_path: local weights file or zoo checkpoint to start from.
        drop_rate: dropout before the classifier.
        drop_path_rate: retired: stochastic depth is ``callbacks.StochasticDepth`` (fixed rates and ramps, one
            way). Read from the checkpoints that hold it and unused there (evaluation drops nothing); refused in
            training with the callback to give instead.
        model_kwargs: any further options of the model factory.
        optimizer: optimizer name and hyper-parameters.
        label_smoothing: ε of label-smoothed cross-entropy.
        max_nonfinite_steps: stop training after this many non-finite losses in a row (each is skipped).
        mixup_alpha: α of mixup's λ ~ Beta(α, α) on training batches (timm's ``Mixup``; 0: off).
        cutmix_alpha: α of CutMix (0: off); with both on, a batch takes CutMix with ``mixup_switch_prob``.
        mixup_prob: chance that a training batch is mixed at all.
        mixup_switch_prob: chance of CutMix instead of mixup when both alphas are set.
        backbone_lr_scale: lr of the layers outside the classifier as a fraction of the head's (the lectures: a
            smaller lr for pretrained layers, e.g. 0.1); below 1, or with frozen layers, the optimizer gets the
            param groups ``head`` and ``backbone`` (see :mod:`zoo.training.freeze`).
        channels_last: keep conv weights and input batches in N×H×W×C memory order (faster convolutions on
            GPUs with tensor cores, with bf16-mixed precision); see :mod:`zoo.runtime.accelerate`.
        compile: compile the network with ``torch.compile`` (in place: checkpoints keep the same keys).
        compile_options: options of ``torch.compile``, e.g. ``{mode: max-autotune}``.
    """

    tta_flip: bool = (
        False  # test and predict average over the mirror image too (zoo.training.tta, --tta flip)
    )

    def __init__(
        self,
        arch: str = "convnet",
        num_classes: int = 10,
        in_chans: int = 3,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        model_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerConfig | None = None,
        label_smoothing: float = 0.0,
        max_nonfinite_steps: int = 10,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        backbone_lr_scale: float = 1.0,
        channels_last: bool = False,
        compile: bool = False,
        compile_options: dict[str, Any] | None = None,
    ):
        super().__init__()
        if not (math.isfinite(backbone_lr_scale) and backbone_lr_scale >= 0):
            raise ValueError(f"model.backbone_lr_scale={backbone_lr_scale!r} must be a number ≥ 0 (e.g. 0.1)")
        optimizer = optimizer or OptimizerConfig()
        if isinstance(optimizer, dict):  # from a checkpoint's hyper-parameters
            optimizer = OptimizerConfig.from_dict(optimizer)
        self.optimizer_config = optimizer
        # plain types only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["optimizer"])
        self.hparams["optimizer"] = optimizer.to_dict()

        options = dict(model_kwargs or {})
        if drop_rate:
            options["drop_rate"] = drop_rate
        if pretrained_path:
            options["pretrained_path"] = pretrained_path
        self.model = create_model(
            arch, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained, **options
        )
        if channels_last:
            to_channels_last(self.model)
        if compile:
            compile_module(self.model, compile_options)
        self.channels_last = channels_last
        self.num_classes = num_classes
        self.guard = NonFiniteGuard(max_nonfinite_steps)
        self.mixup = build_mixup(
            mixup_alpha, cutmix_alpha, mixup_prob, mixup_switch_prob, label_smoothing, num_classes
        )
        self.train_top1, self.train_top5 = accuracy(num_classes, 1), accuracy(num_classes, 5)
        self.val_top1, self.val_top5 = accuracy(num_classes, 1), accuracy(num_classes, 5)
        self.test_top1, self.test_top5 = accuracy(num_classes, 1), accuracy(num_classes, 5)
        # means of the per-image losses; "disable": no NaN check (a device sync per batch), a NaN loss shows as NaN
        self.val_loss, self.test_loss = MeanMetric(nan_strategy="disable"), MeanMetric(nan_strategy="disable")
        self._logged: set[str] = set()  # stages whose metrics this epoch has logged (see log_epoch_metrics)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(channels_last_input(x) if self.channels_last else x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if target.is_floating_point():  # soft targets of mixup/CutMix (label smoothing already in them)
            return soft_target_cross_entropy(logits, target)
        return F.cross_entropy(
            logits, target, label_smoothing=self.hparams.label_smoothing, reduction=reduction
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        target = y
        if self.mixup is not None:
            x, y, target = mix_batch(self.mixup, x, y)
            if not len(x):
                return None  # a batch of one image cannot be mixed
        saved = self.guard.save(self.model)
        logits = self(x)
        loss = self.loss(logits, target)
        if not self.guard.ok(self, loss, saved):
            return None  # skip this step: no NaN reaches the weights or a checkpoint
        self.train_top1.update(logits, y)
        self.train_top5.update(logits, y)
        if self.logs_this_step():
            self.log("train/loss", loss, prog_bar=True)
        self.log_epoch_metrics("train", {"train/top1": self.train_top1, "train/top5": self.train_top5})
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_loss.update(self.loss(logits, y, reduction="none"))  # the mean over images, not batches
        self.val_top1.update(logits, y)
        self.val_top5.update(logits, y)
        metrics = {"val/loss": self.val_loss, "val/top1": self.val_top1, "val/top5": self.val_top5}
        self.log_epoch_metrics("val", metrics, prog_bar=("val/loss", "val/top1"))
        return logits

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = view_scores(
            self, x, self.tta_flip
        )  # with --tta: log of the views' mean softmax (zoo.training.tta)
        self.test_loss.update(self.loss(logits, y, reduction="none"))
        self.test_top1.update(logits, y)
        self.test_top5.update(logits, y)
        self.log_epoch_metrics(
            "test", {"test/loss": self.test_loss, "test/top1": self.test_top1, "test/top5": self.test_top5}
        )

    def logs_this_step(self) -> bool:
        """Whether Lightning writes this training step's logs (every ``log_every_n_steps`` optimizer steps), or
        the step ends the epoch. ``train/loss`` is logged then only: a ``self.log`` costs ~0.3 ms, and the
        progress bar shows the loss of the latest logged step."""
        trainer = self.trainer
        every = trainer.log_every_n_steps
        if trainer.fast_dev_run or (every > 0 and (self.global_step + 1) % every == 0):
            return True
        return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)

    def log_epoch_metrics(self, stage: str, metrics: dict, prog_bar: tuple[str, ...] = ()) -> None:
        """``self.log`` the stage's metric objects once per epoch, at its first step. Lightning keeps the object,
        computes it at the epoch's end over all its updates (synced over the processes) and resets it, so one
        call per epoch logs what a call per step would, without its ~0.3 ms per step and metric."""
        if stage in self._logged:
            return
        self._logged.add(stage)
        for name, metric in metrics.items():
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=name in prog_bar)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            refuse_fixed_drop_path(self.hparams, self.model)

    def on_train_epoch_start(self) -> None:
        self._logged.discard("train")

    def on_validation_epoch_start(self) -> None:
        self._logged.discard("val")

    def on_test_epoch_start(self) -> None:
        self._logged.discard("test")

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x, ids = batch if isinstance(batch, (list, tuple)) else (batch, None)
        return {"probs": view_scores(self, x, self.tta_flip).softmax(-1), "ids": ids}

    def pretrained_data_config(self) -> dict | None:
        """The pretrained backbone's preprocessing (input size, interpolation, mean, std, crop) as resolved by
        ``timm.data.resolve_data_config``; ``None`` for a model trained from scratch (no pretrained weights
        or no ``pretrained_cfg``), whose inputs are then normalised as the data module decides. The CLI hands
        it to the data module (``ImageDataModule.set_model_config``); the data module never reads the model."""
        if not (self.hparams.pretrained or self.hparams.pretrained_path):
            return None
        owner = next((m for m in self.model.modules() if getattr(m, "pretrained_cfg", None)), None)
        if owner is None:
            return None
        cfg = model_data_config(owner)
        info = getattr(owner, "feature_info", None)
        if info:  # the stride of the last feature map: what fits the input size to small images
            cfg["reduction"] = int(info[-1]["reduction"])
        return cfg

    def param_groups(self) -> list[dict]:
        """Parameter groups as ``[{"name", "params" (module or tensors), "lr_scale"}]``; each group's lr is
        ``optimizer.lr × lr_scale``, and every group is then split by weight decay (``NAME/no_decay``).
        Override to give parts of the model their own lr (e.g. a backbone at 0.1× the head)."""
        scale = self.hparams.get("backbone_lr_scale", 1.0)
        if scale == 1.0 and all(p.requires_grad for p in self.model.parameters()):
            return [{"name": "model", "params": self.model, "lr_scale": 1.0}]
        return freeze.param_groups(self.model, scale)  # head, and the trainable rest at lr × scale

    # --- what fine-tuning asks of the model (zoo.protocols.FineTunable; the callbacks reach no further) ---
    @property
    def has_pretrained_weights(self) -> bool:
        """Whether the network started from pretrained weights (``pretrained`` or ``pretrained_path``)."""
        return bool(self.hparams.get("pretrained") or self.hparams.get("pretrained_path"))

    @property
    def backbone_lr_scale(self) -> float:
        """lr of the layers outside the classifier as a fraction of the head's."""
        return float(self.hparams.get("backbone_lr_scale", 1.0))

    def classifier(self) -> nn.Module:
        """The new head: the module whose inputs are the backbone's features (timm's ``get_classifier``)."""
        return self.model.get_classifier()

    def backbone_stages(self) -> list[tuple[str, nn.Module]]:
        """The backbone's stages top-down (the deepest first, the stem last), the classifier left out."""
        return model_stages(self.model)[1:]

    def stage_taps(self) -> list[str]:
        """Stages below the top whose pooled outputs the probe may read too, deepest first (timm's
        ``feature_info``, the last two); [] for a network without them or already reading stages."""
        if isinstance(self.model, StageHead) or not hasattr(self.model, "forward_intermediates"):
            return []
        return list(network_taps(self.model))

    def probe_features(self, x: torch.Tensor, blocks: list[str]) -> list[torch.Tensor]:
        """The pooled feature ``blocks`` of the batch ``x``: ``top`` is the head's input (caught by a hook on the
        head, so any network with one classifier module works); stage names come from :meth:`stage_taps`."""
        x = channels_last_input(x) if self.channels_last else x
        if blocks != [TOP]:
            return stage_features(self.model, x, blocks)
        caught = []
        hook = self.classifier().register_forward_pre_hook(lambda _m, args: caught.append(args[0]))
        try:
            self.model(x)
        finally:
            hook.remove()
        return [caught[0].flatten(1)]

    def load_probe(self, fit) -> None:
        """Load a fitted probe (:class:`zoo.training.probe.ProbeFit`, K×D ``weight`` and ``bias``) into the head."""
        load_head(self.classifier(), fit)

    def use_stages(self, stages: list[str], fit) -> None:
        """Make the head read the pooled blocks ``stages`` side by side (:class:`zoo.models.stage_head.StageHead`) with
        the probe ``fit``'s weights. The hyper-parameters name the stages, so a checkpoint rebuilds the same
        network (``zoo test``, ``zoo predict``, ``zoo export``)."""
        device = self.classifier().weight.device
        self.model = StageHead(self.model, list(stages), self.num_classes).to(device)
        self.hparams["model_kwargs"] = {
            **(self.hparams.get("model_kwargs") or {}),
            "head_stages": list(stages),
        }
        self.load_probe(fit)

    def can_add_param_groups(self) -> bool:
        """Whether param groups can join mid-run (L-BFGS takes exactly one group)."""
        return self.optimizer_config.name != "lbfgs"

    def new_param_groups(self, name: str, params: list[nn.Parameter], lr: float) -> list[dict]:
        """Optimizer groups for ``params`` joining as ``name``: lr = ``lr`` × ``backbone_lr_scale``, split by
        weight decay as at the start (the model's ``no_weight_decay`` names kept)."""
        group = {
            "name": name,
            "params": freeze.ParamSet(self.model, params),
            "lr_scale": self.backbone_lr_scale,
        }
        return [g for g in build_param_groups([group], self.optimizer_config, lr) if g["params"]]

    def train(self, mode: bool = True):
        """``nn.Module.train``, leaving frozen layers (:func:`zoo.training.freeze.freeze`) in eval mode."""
        super().train(mode)
        freeze.keep_frozen_eval(self)
        return self

    def configure_optimizers(self):
        config = self.optimizer_config
        global_batch = None
        if config.reference_batch_size is not None:
            global_batch = global_batch_size(self.trainer)
        if config.name == "lbfgs":
            warn_lbfgs_noise(self.model, self.trainer)
        return build_optimizer(self.param_groups(), config, global_batch=global_batch)


def refuse_fixed_drop_path(hparams, model: nn.Module) -> None:
    """Training with the retired ``drop_path_rate`` (the model's, or its factory's in ``model_kwargs``) is an error
    naming the ``StochasticDepth`` callback and rule that give the same rates: ``efficientnet`` ((l − 1)/L·r) for
    timm's EfficientNet and MobileNet builder, ``timm`` ((l − 1)/(L − 1)·r) for timm's other families, the default
    ``huang`` ((l/L)·r) for the zoo's ResNets."""
    from timm.models import EfficientNet, MobileNetV3

    given = {
        "model.drop_path_rate": hparams.get("drop_path_rate"),
        "model.model_kwargs.drop_path_rate": (hparams.get("model_kwargs") or {}).get("drop_path_rate"),
    }
    for key, rate in given.items():
        if not rate:
            continue
        rule = ""
        if isinstance(model, (EfficientNet, MobileNetV3)):
            rule = " --trainer.callbacks.rule efficientnet"
        elif str(hparams.get("arch", "")).startswith("timm/"):
            rule = " --trainer.callbacks.rule timm"
        instead = (
            "--model.drop_path_rate 0" if key == "model.drop_path_rate" else "without it in model_kwargs"
        )
        raise ZooError(
            f"{key} {rate}: stochastic depth is its callback's alone: --trainer.callbacks+=callbacks.StochasticDepth "
            f"--trainer.callbacks.drop_path_rate {rate}{rule}, {instead} (docs/regularisation.md)"
        )


def accuracy(num_classes: int, k: int) -> TopKAccuracy:
    """Micro-averaged top-k accuracy (k ≤ the classes), #(y among the k highest scores) / #images."""
    return TopKAccuracy(min(k, num_classes))
