"""Write ``predict`` results to a CSV: one row per input with its top-k classes and probabilities."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from zoo.protocols import ClassNames
from zoo.runtime.loggers import run_dir


class PredictionWriter(BasePredictionWriter):
    """Collect ``{"probs", "ids"}`` from ``predict_step`` and write ``path,class_1,prob_1,...,class_k,prob_k``,
    one row per image in the data's order, also under DDP (Lightning gives each process an unpadded share).

    Args:
        output: CSV path; default ``<log dir>/predictions.csv``.
        top_k: classes per row.
    """

    def __init__(self, output: str | None = None, top_k: int = 3):
        super().__init__(write_interval="epoch")
        self.output = output
        self.top_k = top_k

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        rows = []  # (index of the image in the data set, row)
        names = trainer.datamodule.class_names if isinstance(trainer.datamodule, ClassNames) else None
        # Lightning's batch indices: one list per loader, then one per batch (the images' places in the data)
        single = batch_indices[0] if batch_indices and len(batch_indices) == 1 else None
        indices_of = single if single is not None and len(single) == len(predictions) else None
        for b, batch in enumerate(predictions):
            probs = batch["probs"].float().cpu()
            k = min(self.top_k, probs.shape[-1])
            values, indices = probs.topk(k, dim=-1)
            ids = batch["ids"] if batch["ids"] is not None else [""] * len(probs)
            where = indices_of[b] if indices_of is not None else [None] * len(probs)
            for index, ident, vals, idxs in zip(where, ids, values.tolist(), indices.tolist()):
                row = [str(ident)]
                for v, c in zip(vals, idxs):
                    row += [names[c] if names else c, f"{v:.6f}"]
                rows.append((index, row))
        if (
            trainer.world_size > 1
        ):  # each process predicted its share of the images (once each): all, in order
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
            if all(index is not None for index, _ in rows):
                rows.sort(key=lambda r: r[0])
        rows = [row for _, row in rows]
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
