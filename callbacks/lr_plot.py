"""The learning rate of every param group as the run used it, drawn at the end of ``fit``.

``zoo schedule`` draws the planned curve before training; this draws the one that happened (warmup,
decays, a resume, groups added while fine-tuning) into ``lr_schedule.png`` in the run's directory, and
logs it to W&B as ``train/lr_schedule`` when a ``WandbLogger`` is attached. Lightning's
``LearningRateMonitor`` logs the same values as metrics; this keeps them as one picture with the run.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from callbacks.report import FAST_PNG
from zoo.runtime.loggers import run_dir


class LRPlot(Callback):
    """Record lr_g(t) of each param group g at optimizer steps t (x = epoch + batch / batches per epoch): every
    step until a group holds ``max_points``, then every 2nd, 4th, … step (the points kept so far are thinned
    to the new stride), so a run of a million steps keeps a few thousand points in memory and in every
    checkpoint, not a million.

    Args:
        log_scale: logarithmic lr axis.
        max_points: most points kept per param group (≥ 2).
    """

    def __init__(self, log_scale: bool = False, max_points: int = 2048):
        if max_points < 2:
            raise ValueError(f"LRPlot: max_points must be >= 2, got {max_points}")
        self.log_scale, self.max_points = log_scale, max_points
        self.lrs: dict[str, list[tuple[float, float]]] = {}
        self._x = 0.0
        self._steps = 0  # optimizer steps seen
        self._stride = 1  # points are kept at steps that are multiples of it
        self._first: dict[str, int] = {}  # the step of each group's first point

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._x = trainer.current_epoch + batch_idx / max(trainer.num_training_batches, 1)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        step, self._steps = self._steps, self._steps + 1
        if step % self._stride:
            return
        for i, group in enumerate(optimizer.param_groups):
            name = group.get("name", f"pg{i}")
            self._first.setdefault(name, step)
            self.lrs.setdefault(name, []).append((self._x, float(group["lr"])))
        if max(len(points) for points in self.lrs.values()) > self.max_points:
            self._thin()

    def _thin(self) -> None:
        """Double the stride: keep the points at steps that are multiples of the new one."""
        self._stride *= 2
        for name, points in self.lrs.items():
            skip = 1 if self._first[name] % self._stride else 0  # the group joined between two kept steps
            self.lrs[name] = points[skip::2]
            self._first[name] += skip * self._stride // 2

    def state_dict(self) -> dict:
        """The points as one n×2 float64 tensor (epoch, lr) per group: a checkpoint pickles a tensor in one go,
        where a list of pairs costs ~1 ms per thousand points at every save."""
        lrs = {
            name: torch.tensor(points, dtype=torch.float64).view(-1, 2) for name, points in self.lrs.items()
        }
        return {"lrs": lrs, "steps": self._steps, "stride": self._stride, "first": self._first}

    def load_state_dict(self, state_dict: dict) -> None:
        # tensors, or lists of pairs in checkpoints written before the tensors
        lrs = state_dict.get("lrs", {}).items()
        self.lrs = {k: [tuple(p) for p in (v.tolist() if torch.is_tensor(v) else v)] for k, v in lrs}
        # a checkpoint from before thinning holds every step of every group, all from step 0
        self._steps = state_dict.get("steps", max((len(v) for v in self.lrs.values()), default=0))
        self._stride = state_dict.get("stride", 1)
        self._first = dict(state_dict.get("first", {name: 0 for name in self.lrs}))

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
