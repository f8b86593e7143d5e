"""Snapshot ensembles (Huang et al., 2017): M cycles of cosine annealing with restarts in one training budget,
a snapshot of the weights at the end of each cycle, and the average of the snapshots' softmax at test time.

This callback owns the cycles and the snapshots. The lr is one more ``LRSchedule`` factor, so it is written by
the same code as every schedule of the zoo and composes with a ``LinearWarmup``; the snapshots are Lightning
checkpoints (``trainer.save_checkpoint``), so ``zoo ensemble`` and ``zoo test`` read them; scoring them and
reporting the scores is :mod:`zoo.tools.ensemble`'s, as for ``zoo ensemble``.
"""

from __future__ import annotations

import math
from pathlib import Path

from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from callbacks.device_batches import device_batches
from callbacks.eval_once import whole_split
from callbacks.lr_schedule import LRSchedule, schedules_of
from callbacks.precise_bn import PreciseBN
from callbacks.warmup import LinearWarmup


class SnapshotEnsemble(LRSchedule):
    """lr(t) = α0/2·(cos(π·mod(t, T/M)/(T/M)) + 1): M cosine cycles of length T/M, a snapshot at each cycle end.

    T is the run from ``start`` to its end (``trainer.max_epochs``/``max_steps``), α0 each group's base lr.
    The snapshots are ``<dirpath>/snapshot-MM.ckpt`` (weights and hyper-parameters, no optimizer state).
    At the end of training, with ``evaluate``, each snapshot and the ensemble (mean of their softmax
    outputs; also of the last ``last`` ones) are scored on the validation split, printed as a table,
    logged as ``snapshot/val_top1/<m>`` and ``snapshot/val_top1/ensemble``, and kept in ``results``
    (:func:`zoo.tools.ensemble.score_snapshots`, :func:`zoo.tools.ensemble.report_snapshots`).

    Contract with :class:`~callbacks.precise_bn.PreciseBN`: at the end of each cycle, in this callback's
    ``on_train_batch_end`` and whatever the order of the callbacks, ``PreciseBN.recompute`` runs for every
    ``PreciseBN`` in ``trainer.callbacks`` before the snapshot is saved, so the snapshot holds the statistics
    the validation after it uses; that validation then skips its own recompute (same step). The only other
    schedule allowed beside it is a ``LinearWarmup``: it sets the lr's cycles itself.

    Args:
        cycles: M, the number of cycles and snapshots (Huang et al.: 5 or 6 on CIFAR with α0 = 0.1 or 0.2).
        dirpath: folder of the snapshots; default ``<run dir>/snapshots``.
        evaluate: score the snapshots and the ensemble on the validation split when training ends.
        last: also score the ensemble of the last k snapshots (the paper's "M = k" rows).
        **kwargs: ``unit``, ``interval``, ``start``, ``groups`` of :class:`~callbacks.lr_schedule.LRSchedule`;
            ``start`` = a warmup's length makes the cycles begin after it.
    """

    def __init__(
        self,
        cycles: int = 5,
        dirpath: str | None = None,
        evaluate: bool = True,
        last: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not (isinstance(cycles, int) and cycles >= 1):
            raise ValueError(f"SnapshotEnsemble: cycles={cycles!r} must be a whole number ≥ 1")
        if last is not None and not 1 <= last <= cycles:
            raise ValueError(f"SnapshotEnsemble: last={last!r} must be between 1 and cycles={cycles}")
        self.cycles, self.dirpath, self.evaluate, self.last = cycles, dirpath, evaluate, last
        self.snapshots: list[str] = []
        self.results: dict[str, dict[str, float]] = {}

    # --- the curve -----------------------------------------------------------------------------
    @property
    def cycle_length(self) -> float:
        """T/M in ``unit``s."""
        return (self.total - self.start) / self.cycles

    def factor(self, t: float) -> float:
        x = t / self.cycle_length
        position = max(x - math.floor(x + 1e-9), 0.0)  # mod(t, T/M)/(T/M), exact at the restarts
        return 0.5 * (math.cos(math.pi * position) + 1.0)

    def breakpoints(self) -> list[tuple[float, str]]:
        restarts = [(self.start + m * self.cycle_length, f"restart {m + 1}") for m in range(1, self.cycles)]
        return [*super().breakpoints(), *restarts]

    def cycle_ends(self) -> list[int]:
        """Optimizer steps after which each snapshot is taken (the last is the run's last step)."""
        spe = self.steps_per_epoch if self.unit == "epoch" else 1
        return [round((self.start + m * self.cycle_length) * spe) for m in range(1, self.cycles + 1)]

    def replan(self, steps_per_epoch: int, total_steps: float, step: int) -> None:
        """A run resumed with another length: the cycles still to come are spread over it (the snapshots taken
        stay); a run that took all its snapshots is refused, since a longer one would take none."""
        if len(self.snapshots) >= self.cycles:
            raise ValueError(
                f"SnapshotEnsemble: the checkpoint's run took all its {self.cycles} snapshots, so a longer run "
                "would take none: to train longer, start a new run (without --ckpt_path) with the new "
                "--trainer.max_epochs"
            )
        super().replan(steps_per_epoch, total_steps, step)

    def check(self) -> None:
        self.needs_length()
        ends = [round(self.start * (self.steps_per_epoch if self.unit == "epoch" else 1)), *self.cycle_ends()]
        if any(b - a < 2 for a, b in zip(ends, ends[1:])):
            raise ValueError(
                f"SnapshotEnsemble: {self.cycles} cycles in a run of {self.total:g} {self.unit}s "
                f"({self.total_steps} optimizer steps, starting at {self.start:g}) leave fewer than 2 steps per "
                "cycle: lower cycles or raise trainer.max_epochs"
            )

    # --- Lightning hooks -----------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        others = [
            type(s).__name__ for s in schedules_of(trainer) if not isinstance(s, (LinearWarmup, type(self)))
        ]
        if others:
            raise ValueError(
                f"SnapshotEnsemble sets the lr's cosine cycles itself, but trainer.callbacks also has "
                f"{', '.join(others)}: remove them (a LinearWarmup may stay)"
            )
        if self.dirpath is None:
            from zoo.runtime.loggers import run_dir

            self.dirpath = trainer.strategy.broadcast(str(run_dir(trainer) / "snapshots"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        ends = self.cycle_ends()
        while len(self.snapshots) < self.cycles and trainer.global_step >= ends[len(self.snapshots)]:
            for precise in (c for c in trainer.callbacks if isinstance(c, PreciseBN)):
                precise.recompute(trainer, pl_module)  # the snapshot gets the statistics validation would use
            path = Path(self.dirpath) / f"snapshot-{len(self.snapshots) + 1:02d}.ckpt"
            trainer.save_checkpoint(path, weights_only=True)
            self.snapshots.append(str(path))
            rank_zero_info(
                f"Snapshot {len(self.snapshots)}/{self.cycles} at step {trainer.global_step}: {path}"
            )

    def on_train_end(self, trainer, pl_module) -> None:
        if len(self.snapshots) < self.cycles:
            rank_zero_warn(
                f"SnapshotEnsemble: training ended after {len(self.snapshots)} of {self.cycles} snapshots "
                "(stopped early?); the ensemble has only those"
            )
        if self.evaluate and self.snapshots and trainer.is_global_zero:
            self._evaluate(trainer, pl_module)

    def _evaluate(self, trainer, pl_module) -> None:
        """Score each snapshot and the ensemble on the validation split (:mod:`zoo.tools.ensemble`), print, log."""
        from zoo.tools.ensemble import report_snapshots, score_snapshots

        dm = trainer.datamodule
        loader = (
            whole_split(dm.val_dataloader)() if dm is not None else trainer.val_dataloaders
        )  # rank 0 alone
        if not loader:
            rank_zero_info("SnapshotEnsemble: no validation data, so the snapshots are not scored")
            return
        batches = lambda: device_batches(trainer, loader, RunningStage.VALIDATING)  # noqa: E731 - as validated
        self.results = score_snapshots(pl_module, self.snapshots, batches, pl_module.device, self.last)
        report_snapshots(self.results, trainer.loggers, trainer.global_step)

    # --- checkpoint state ----------------------------------------------------------------------
    @classmethod
    def curve_parameters(cls) -> list[str]:
        """Only ``cycles`` shapes the curve; the folder and the scoring options do not."""
        return ["cycles"]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "snapshots": list(self.snapshots), "dirpath": self.dirpath}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.snapshots, self.dirpath = list(state_dict["snapshots"]), state_dict["dirpath"]
