"""The learning rate of every param group as the run used it, drawn at the end of ``fit``.

``zoo schedule`` draws the planned curve before training; this draws the one that happened (warmup,
decays, a resume, groups added while fine-tuning) into ``lr_schedule.png`` in the run's directory, and
logs it to W&B as ``train/lr_schedule`` when a ``WandbLogger`` is attached. Lightning's
``LearningRateMonitor`` logs the same values as metrics; this keeps them as one picture with the run.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from callbacks.report import FAST_PNG
from zoo.loggers import run_dir


class LRPlot(Callback):
    """Record lr_g(t) of each param group g at every optimizer step t (epoch + batch / batches per epoch).

    Args:
        log_scale: logarithmic lr axis.
    """

    def __init__(self, log_scale: bool = False):
        self.log_scale = log_scale
        self.epochs: list[float] = []
        self.lrs: dict[str, list[tuple[float, float]]] = {}
        self._x = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._x = trainer.current_epoch + batch_idx / max(trainer.num_training_batches, 1)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for i, group in enumerate(optimizer.param_groups):
            self.lrs.setdefault(group.get("name", f"pg{i}"), []).append((self._x, float(group["lr"])))

    def state_dict(self) -> dict:
        return {"lrs": self.lrs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.lrs = {k: [tuple(p) for p in v] for k, v in state_dict.get("lrs", {}).items()}

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.lrs:
            return
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 3.6), dpi=110)
        ax = fig.subplots()
        for name, points in self.lrs.items():
            ax.plot(*zip(*points), label=name, linewidth=1.4)
        ax.set(xlabel="epoch", ylabel="learning rate", title="Learning rate as run")
        if self.log_scale:
            ax.set_yscale("log")
        if len(self.lrs) > 1:
            ax.legend(title="param group")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = run_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "lr_schedule.png"
        fig.savefig(self.path, pil_kwargs=FAST_PNG)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("train/lr_schedule", [str(self.path)], step=trainer.global_step)
