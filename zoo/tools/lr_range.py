"""The lr range test: lr_t = lr_min · (lr_max / lr_min)^(t/T) for T steps, the smoothed loss read against the lr.

Written here rather than taken from Lightning's ``Tuner.lr_find`` / ``LearningRateFinder``, which assume the sweep
starts at global step 0 (their stop rule and smoothing read ``trainer.global_step``), correct the smoothing's bias
one step off, and set every param group to one lr. Here:

- each param group keeps its ratio to the head, lr × ``lr_scale`` (a pretrained backbone at 0.1×), times the
  linear scaling rule's factor when the recipe has one, so the swept value is the recipe's ``model.optimizer.lr``;
- the sweep starts with the first training step. A fine-tuning recipe fits its head as a linear probe before
  that (a phase of its own, at the fit's start), so the test runs from the probe's head, with the param groups
  (and ratios) the fine-tuning trains from then on;
- the loss is smoothed as fastai and Lightning smooth it, s_t = EMA_β(L)_t / (1 − β^(t+1)) with β = 0.98, and the
  sweep stops once s_t passes 4× its lowest value or a loss is not finite;
- the reading: the suggestion is the steepest fall against log lr, and a curve too flat or too noisy gives none
  and says why (:func:`read_curve`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from zoo.errors import ZooError
from zoo.protocols import Optimized
from zoo.training.optim import global_batch_size, scale_lr

MIN_DROP = 0.1  # the loss must fall by this fraction of its highest value before a suggestion means anything
MAX_NOISE = 0.5  # rises before the minimum, summed, over the fall: above this the curve is noise
MIN_POINTS = 20  # steps the sweep needs; the first 10 points are not read


@dataclass
class Reading:
    """What the curve says: ``lr`` suggested (None: nothing to suggest), and ``why`` in one sentence."""

    lr: float | None
    why: str
    index: int | None = None  # the suggested point's position in the sweep


def read_curve(lrs: list[float], losses: list[float], skip_begin: int = 10) -> Reading:
    """The lr where the smoothed loss falls fastest against log lr, between the curve's peak and its minimum.

    The slope is taken against log10(lr), not against the lr as Lightning's ``suggestion()`` takes it: on an
    exponential sweep the lr steps at the low end are tiny, so there noise alone makes the steepest dL/dlr (on
    digits that rule suggests 6e-5 against a tuned 0.1). No suggestion when the fall, (L_peak − L_min) / L_peak, is
    under ``MIN_DROP`` (too flat), or when the rises between peak and minimum, summed, pass ``MAX_NOISE`` ×
    (L_peak − L_min) (too noisy). The first ``skip_begin`` points are left out (Lightning's suggestion skips them
    too): there the smoothed loss is still mostly the first batches'."""
    points = [(i, lr, loss) for i, (lr, loss) in enumerate(zip(lrs, losses)) if math.isfinite(loss)]
    points = [p for p in points if p[0] >= skip_begin]
    if len(points) < MIN_POINTS - skip_begin:
        return Reading(
            None,
            f"too few points to read ({len(points)} finite losses after the first {skip_begin}): the test "
            "stopped early; lower --min_lr or raise --steps",
        )
    values = [loss for _, _, loss in points]
    lowest = min(range(len(values)), key=values.__getitem__)
    peak = max(range(lowest + 1), key=values.__getitem__)
    fall = values[peak] - values[lowest]
    if fall < MIN_DROP * abs(values[peak]) or lowest - peak < 2:
        return Reading(
            None,
            f"the curve is too flat: the loss fell from {values[peak]:.3g} to no lower than {values[lowest]:.3g} "
            f"between lr {points[0][1]:.2g} and {points[-1][1]:.2g}; widen the range (--min_lr, --max_lr), or "
            "look for a bug (labels, inputs, frozen layers)",
        )
    rises = sum(max(b - a, 0.0) for a, b in zip(values[peak:lowest], values[peak + 1 : lowest + 1]))
    if rises > MAX_NOISE * fall:
        return Reading(
            None,
            f"the curve is too noisy: between its peak and its lowest point the loss rose by {rises:.3g} in all "
            f"while falling {fall:.3g}; use a larger batch (--data.batch_size) or more steps (--steps)",
        )
    logs = [math.log10(lr) for _, lr, _ in points[peak : lowest + 1]]
    slopes = [
        (values[peak + j + 1] - values[peak + j - 1]) / (logs[j + 1] - logs[j - 1])
        for j in range(1, len(logs) - 1)
    ]
    steepest = peak + 1 + min(range(len(slopes)), key=slopes.__getitem__)
    index, lr = points[steepest][0], points[steepest][1]
    return Reading(lr, f"the loss falls fastest at lr {lr:.3g}", index)


class RangeTest(Callback):
    """lr_t = lr_min · (lr_max / lr_min)^(t/T) on the head, lr_t × lr_scale on every other group; then stop the fit.

    Args:
        min_lr: the sweep's first lr (of the head group, as ``model.optimizer.lr``).
        max_lr: its last.
        steps: optimizer steps of the sweep (T + 1).
        stop_factor: stop once the smoothed loss passes this many times its lowest value (None: never).
        beta: the smoothing's β.
        schedules: classes of the callbacks that set the lr (the recipe's schedules, a fine-tuning's warmups);
            they leave the trainer when the sweep starts.
    """

    def __init__(
        self,
        min_lr: float,
        max_lr: float,
        steps: int,
        stop_factor: float | None = 4.0,
        beta: float = 0.98,
        schedules: tuple[type, ...] = (),
    ):
        if not 0 < min_lr < max_lr:
            raise ZooError(f"--min_lr {min_lr:g} and --max_lr {max_lr:g}: need 0 < min_lr < max_lr")
        if steps < MIN_POINTS:
            raise ZooError(f"--steps {steps}: the test needs at least {MIN_POINTS} steps to read a curve")
        self.min_lr, self.max_lr, self.steps = min_lr, max_lr, steps
        self.stop_factor, self.beta, self.schedules = stop_factor, beta, schedules
        self.factor = 1.0  # the linear scaling rule's: every group's lr per unit of model.optimizer.lr
        self.epoch: int | None = None  # the epoch the sweep started at
        self.results: dict | None = None  # "lr", "loss" (smoothed), "raw", and "groups": each group's lr
        self._start_step = 0
        self._average = 0.0

    def setup(self, trainer, pl_module, stage: str) -> None:
        config = pl_module.optimizer_config if isinstance(pl_module, Optimized) else None
        if config is not None and config.name == "lbfgs":
            raise ZooError(
                "L-BFGS chooses its step by line search: an lr range test does not apply (use another optimizer)"
            )

    def lr_at(self, t: int) -> float:
        """The swept lr of step ``t``."""
        return self.min_lr * (self.max_lr / self.min_lr) ** (t / max(self.steps - 1, 1))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.results is not None:
            return  # started already
        config = pl_module.optimizer_config if isinstance(pl_module, Optimized) else None
        if config is not None and config.reference_batch_size:
            self.factor = scale_lr(1.0, global_batch_size(trainer), config.reference_batch_size)
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, self.schedules)]
        trainer.fit_loop.max_epochs = -1  # the sweep's steps bound the run, not the recipe's epochs
        self.epoch, self._start_step = trainer.current_epoch, trainer.global_step
        self.results = {"lr": [], "loss": [], "raw": [], "groups": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.results is None:
            return
        swept = self.lr_at(trainer.global_step - self._start_step)
        lrs = {}
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = swept * self.factor * group.get("lr_scale", 1.0)
            lrs[group.get("name", "model")] = group["lr"]
        self.results["lr"].append(swept)
        self.results["groups"].append(lrs)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.results is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        raw = float(loss.detach()) if loss is not None else math.nan  # None: a non-finite loss, skipped
        results = self.results
        results["raw"].append(raw)
        t = len(results["raw"]) - 1
        self._average = self.beta * self._average + (1 - self.beta) * raw
        smoothed = self._average / (1 - self.beta ** (t + 1))
        results["loss"].append(smoothed)
        lowest = min((v for v in results["loss"] if math.isfinite(v)), default=math.inf)
        exploded = self.stop_factor is not None and t > 0 and smoothed > self.stop_factor * lowest
        done = trainer.global_step - self._start_step >= self.steps
        if not math.isfinite(smoothed) or exploded or done:
            trainer.should_stop = True
        elif t % max(self.steps // 5, 1) == 0:
            rank_zero_info(
                f"lr range test: step {t}/{self.steps}, lr {results['lr'][-1]:.2g}, loss {smoothed:.3g}"
            )

    def reading(self) -> Reading:
        """What the curve says (:func:`read_curve`)."""
        if not self.results or not self.results["lr"]:
            return Reading(None, "the test took no step (no training batch?)")
        return read_curve(self.results["lr"], self.results["loss"])


def plot(path, lrs: list[float], losses: list[float], reading: Reading, title: str, recipe_lr: float | None):
    """The smoothed loss against the lr (log axis), the suggested point marked and labelled, and the recipe's lr."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.subplots()
    ax.plot(lrs, losses, color="C0", linewidth=1.6, label="loss (smoothed)")
    ax.set_xscale("log")
    if recipe_lr:
        ax.axvline(recipe_lr, color="0.6", linestyle=":", linewidth=1.2, label=f"recipe's lr {recipe_lr:g}")
    if reading.index is not None:
        x, y = lrs[reading.index], losses[reading.index]
        ax.plot([x], [y], "o", color="C3", markersize=9, label=f"suggested lr {x:.3g}")
        ax.annotate(f"{x:.3g}", (x, y), textcoords="offset points", xytext=(8, 8), color="C3")
    else:
        ax.text(0.02, 0.04, "no suggestion: " + reading.why.split(":")[0], transform=ax.transAxes, color="C3")
    finite = [v for v in losses if math.isfinite(v)]
    if finite:  # the end of a sweep explodes: keep the interesting part in view
        low = min(finite)
        ax.set_ylim(low - 0.05 * abs(low), max(finite[0], low) * 1.6 + 1e-9)
    ax.set(xlabel="learning rate (model.optimizer.lr)", ylabel="training loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
