"""Write ``predict`` results to a CSV: one row per input with its top-k classes and probabilities."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from zoo.loggers import run_dir


class PredictionWriter(BasePredictionWriter):
    """Collect ``{"probs", "ids"}`` from ``predict_step`` and write ``path,class_1,prob_1,...,class_k,prob_k``.

    Args:
        output: CSV path; default ``<log dir>/predictions.csv``.
        top_k: classes per row.
    """

    def __init__(self, output: str | None = None, top_k: int = 3):
        super().__init__(write_interval="epoch")
        self.output = output
        self.top_k = top_k

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        rows = []
        names = getattr(trainer.datamodule, "class_names", None)
        for batch in predictions:
            probs = batch["probs"].float().cpu()
            k = min(self.top_k, probs.shape[-1])
            values, indices = probs.topk(k, dim=-1)
            ids = batch["ids"] if batch["ids"] is not None else [""] * len(probs)
            for ident, vals, idxs in zip(ids, values.tolist(), indices.tolist()):
                row = [str(ident)]
                for v, c in zip(vals, idxs):
                    row += [names[c] if names else c, f"{v:.6f}"]
                rows.append(row)
        if trainer.world_size > 1:
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        if not trainer.is_global_zero:
            return
        out = Path(self.output) if self.output else run_dir(trainer) / "predictions.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        k = (len(rows[0]) - 1) // 2 if rows else self.top_k
        with out.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path"] + [h for i in range(1, k + 1) for h in (f"class_{i}", f"prob_{i}")])
            writer.writerows(rows)
        self.written = out
        rank_zero_info(f"Wrote {len(rows)} predictions to {out}")
