"""``zoo predict --explain PATTERN``: where the network looks, for the images whose path matches PATTERN.

For each chosen image one PNG in ``<log dir>/explain/``: the image, then its Grad-CAM heat map (:mod:`zoo.tools.cam`)
for each of its ``top_k`` most probable classes, titled with the class and its probability. Under DDP each
process draws the images it predicted.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from zoo.protocols import ClassNames, EvalViews
from zoo.runtime.loggers import run_dir
from zoo.tools.cam import heat_maps, overlay
from zoo.tools.sheet import contact_sheet, pixels, save


class ExplainPredictions(Callback):
    """L^c = ReLU(Σ_k α_k^c A^k), α_k^c = mean_ij ∂y^c/∂A^k_ij (Grad-CAM) of the top classes of each chosen image.

    Args:
        pattern: shell pattern of the image paths to explain (``*``: every one; ``*/cat_*.jpg``: some).
        top_k: heat maps of this many of the most probable classes.
        max_images: at most this many images per process (the first predicted).
        output: the folder of the PNG files; default ``<log dir>/explain``.
    """

    def __init__(self, pattern: str = "*", top_k: int = 2, max_images: int = 256, output: str | None = None):
        self.pattern, self.top_k, self.max_images, self.output = pattern, top_k, max_images, output
        self.written: list[Path] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        dm = trainer.datamodule
        if stage == "predict" and isinstance(dm, EvalViews) and dm.eval_views is not None:
            raise ValueError(
                "--explain draws heat maps on the image as given, not on several views: leave out --tta "
                "crops/scales (--tta flip works)"
            )

    def on_predict_start(self, trainer, pl_module) -> None:
        self.written = []
        self.folder = Path(self.output) if self.output else run_dir(trainer) / "explain"

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        x, ids = batch if isinstance(batch, (list, tuple)) else (batch, None)
        names = [str(i) for i in ids] if ids is not None else [f"{batch_idx}-{i}" for i in range(len(x))]
        chosen = [i for i, name in enumerate(names) if fnmatch.fnmatch(name, self.pattern)]
        chosen = chosen[: self.max_images - len(self.written)]
        if not chosen:
            return
        probs, top = (
            outputs["probs"][chosen].float().topk(min(self.top_k, outputs["probs"].shape[-1]), dim=-1)
        )
        images = x[chosen]
        maps = [heat_maps(pl_module, images, top[:, k]) for k in range(top.shape[1])]
        classes = trainer.datamodule.class_names if isinstance(trainer.datamodule, ClassNames) else None
        self.folder.mkdir(parents=True, exist_ok=True)
        for row, i in enumerate(chosen):
            cells = [pixels(images[row])] + [overlay(images[row], m[row]) for m in maps]
            said = [
                f"{classes[c] if classes else c} ({p:.2f})"
                for c, p in zip(top[row].tolist(), probs[row].tolist())
            ]
            title = f"{Path(names[i]).name}\nimage · " + " · ".join(said)
            path = self._free(self.folder / f"{Path(names[i]).stem}.png")
            save(contact_sheet([cells], [title], cols=1), path)
            self.written.append(path)

    def _free(self, path: Path) -> Path:
        """``path``, or ``NAME-2.png``, ``NAME-3.png``, ... when this run drew an image of the same name already."""
        stem, n = path.stem, 1
        while path in self.written:
            n += 1
            path = path.with_name(f"{stem}-{n}.png")
        return path

    def on_predict_end(self, trainer, pl_module) -> None:
        count = torch.tensor(float(len(self.written)), device=pl_module.device)
        count = int(trainer.strategy.reduce(count, reduce_op="sum"))
        matched = f"whose path matches {self.pattern!r}" if self.pattern != "*" else "predicted"
        rank_zero_info(f"Heat maps (Grad-CAM) of {count} image(s) {matched}, in {self.folder}")
