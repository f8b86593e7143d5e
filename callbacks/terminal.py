"""What a run shows in the terminal while it trains: Lightning's Rich progress bar and model summary, less their noise.

- :class:`ZooProgressBar`: Lightning's ``RichProgressBar`` without the logger's version (``v_num: 0.000``, a run
  number in the metrics' float format) and without ``0.00it/s`` while the speed is unknown (a loop's first
  batch, a loop of one batch), drawn at most ``refresh_rate`` times a second. Lightning's bar redraws
  up to 100 times a second and, after every training batch, reads and converts every logged metric (~0.3 ms a
  step, and a device sync per value); here a batch that ends less than 1/``refresh_rate`` s after the last
  update is not shown (the last batch of every loop always is).
- :class:`ZooModelSummary`: Lightning's ``RichModelSummary`` without its FLOPs column and total when they are 0
  (Lightning counts FLOPs only for a module with an ``example_input_array``; with one, the column is shown).

Every run gets them in place of Lightning's defaults (``run.progress_bar`` and ``run.model_summary`` in
``recipes/base.yaml``; null: Lightning's own); a bar or summary that a recipe configures itself is kept as it is.
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import ProcessingSpeedColumn
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from rich.text import Text

from zoo.runtime.console import print_table


class ZooProgressBar(RichProgressBar):
    """``RichProgressBar`` without ``v_num``, updated at most ``refresh_rate`` times a second."""

    def __init__(self, refresh_rate: int = 10, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._shown = float("-inf")

    def _due(self, batch_idx: int, total: float | int) -> bool:
        """Whether to show this batch: the loop's last, or ≥ 1/``refresh_rate`` s after the last one shown. The
        hooks ask only on an enabled bar: every rank but 0 of a multi-process run has a disabled one, which has no
        loop totals to read (Lightning asserts)."""
        now = time.monotonic()
        if batch_idx + 1 < total and now - self._shown < 1.0 / self.refresh_rate:
            return False
        self._shown = now
        return True

    def configure_columns(self, trainer) -> list:
        columns = super().configure_columns(trainer)
        return [SpeedColumn(c.style) if type(c) is ProcessingSpeedColumn else c for c in columns]

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.is_disabled and self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not self.is_disabled and self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.is_disabled and self._due(batch_idx, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.is_disabled and self._due(batch_idx, self.total_predict_batches_current_dataloader):
            super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


class SpeedColumn(ProcessingSpeedColumn):
    """Lightning's ``it/s`` column, blank until Rich knows the speed (Lightning shows ``0.00it/s`` then)."""

    def render(self, task):
        if task.speed is None:
            return Text("")
        return super().render(task)


class ZooModelSummary(RichModelSummary):
    """``RichModelSummary`` printed through the zoo's table printer, without a FLOPs column of zeros."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs,
    ) -> None:
        columns = [(name, cells) for name, cells in summary_data if total_flops or name != "FLOPs"]
        names = [name for name, _ in columns]
        print_table(
            "Model",
            names,
            zip(*(cells for _, cells in columns)),
            right=[n for n in names if n in ("Params", "Params per Device", "FLOPs")],
        )
        totals = {
            "trainable params": get_human_readable_count(trainable_parameters),
            "non-trainable params": get_human_readable_count(total_parameters - trainable_parameters),
            "total params": get_human_readable_count(total_parameters),
            "estimated params size (MB)": get_formatted_model_size(model_size),
            "modules in train / eval mode": f"{total_training_modes['train']} / {total_training_modes['eval']}",
        }
        if total_flops:
            totals["FLOPs (one forward pass of the example input)"] = get_human_readable_count(total_flops)
        print_table("", ("what", "value"), totals.items(), header=False)
