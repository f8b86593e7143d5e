"""Keep the W&B run id in every checkpoint, so a run resumed from it continues the same W&B run.

Lightning creates the W&B run before it restores callback state from ``ckpt_path``, so the id cannot
be restored by ``load_state_dict`` alone: :func:`wandb_run_id` reads it from the checkpoint file first
(the ``zoo`` CLI does this for ``zoo fit --ckpt_path ...``) and the logger is built with that ``id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from zoo.runtime.checkpoint import read_checkpoint


def _wandb_logger(trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


class WandbRunId(Callback):
    """Save ``{"id", "project"}`` of the trainer's W&B run in the checkpoint (run id: same id → same run)."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.project: str | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        logger = _wandb_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            self.run_id, self.project = logger.version, logger.name

    def state_dict(self) -> dict[str, Any]:
        return {"id": self.run_id, "project": self.project}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restored = state_dict.get("id")
        if restored and self.run_id and restored != self.run_id:
            rank_zero_warn(
                f"W&B: the checkpoint belongs to run {restored!r} but this run is {self.run_id!r}; "
                f"pass id={restored!r} to the logger (or resume with `zoo fit --ckpt_path`) to continue it."
            )


def wandb_run_id(ckpt_path: str | Path, weights_only: bool = True) -> str | None:
    """The W&B run id stored by :class:`WandbRunId` in ``ckpt_path``, or ``None`` when it holds none."""
    checkpoint = read_checkpoint(ckpt_path, weights_only, mmap=True)
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key == WandbRunId.__qualname__ and isinstance(state, dict):
            return state.get("id")
    return None
