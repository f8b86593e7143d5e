"""Log each param group's lr and momentum (Lightning's ``LearningRateMonitor``), quietly off without a logger."""

from __future__ import annotations

from lightning.pytorch.callbacks import LearningRateMonitor


class LRMonitor(LearningRateMonitor):
    """Logs ``lr-<Optimizer>/<group>`` and ``…-momentum`` (β1 for Adam) every ``logging_interval``.

    Lightning's monitor raises when the trainer has no logger; this one does nothing instead, so recipes
    can keep it on while a run turns logging off (``--trainer.logger false``).
    """

    def __init__(
        self, logging_interval: str | None = "step", log_momentum: bool = True, log_weight_decay: bool = False
    ):
        super().__init__(logging_interval, log_momentum, log_weight_decay)
        self.enabled = True

    def on_train_start(self, trainer, *args, **kwargs) -> None:
        self.enabled = bool(trainer.loggers)
        if self.log_momentum and not any({"momentum", "betas"} & set(o.defaults) for o in trainer.optimizers):
            self.log_momentum = False  # e.g. L-BFGS, AdaGrad: nothing to log (Lightning would log zeros)
        if self.enabled:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        if self.enabled:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        if self.enabled:
            super().on_train_epoch_start(trainer, *args, **kwargs)
