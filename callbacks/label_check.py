"""Likely mislabeled images, said in one line at the start of ``fit``; optionally trained without.

What ``zoo check-data PHOTOS --labels`` does, on the run's own data and backbone: the pretrained network runs once
over the training and validation images (eval mode, the eval preprocessing), and confident learning on the
probe's cross-validated probabilities (:mod:`zoo.tools.label_issues`) ranks the images whose label looks wrong. The run
writes them to ``label_issues.csv`` (and the top ones to ``label_issues.png``) in its directory and says how many
there are; it never moves a file. With ``exclude`` the likely mislabeled training images are left out of the
training split (validation and test keep theirs: their scores stay comparable with other runs).

It looks in ``setup``, before the network is trained or restored (a resumed run looks with the pretrained
network too, and then keeps the list its checkpoint holds), and before fine-tuning sizes the run, so the
budget counts the images that train: ``LabelCheck`` comes before ``FineTuning`` in ``trainer.callbacks`` (the
CLI registers ``label_check`` first). Under DDP global rank 0 alone looks at the images; the other processes get
the list of left-out images from it.
"""

from __future__ import annotations

import copy

import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from callbacks.probe_phase import split_features
from zoo.models.stage_head import TOP
from zoo.protocols import FeatureData, ImageList, SplitDatasets
from zoo.runtime.loggers import run_dir
from zoo.tools.label_issues import COLUMNS, check_labels, issue_rows, require_cleanlab, write_csv, write_sheet

SPLITS = ("train", "val")
SHEET = 20  # suspects on the contact sheet


class LabelCheck(Callback):
    """Flag image i when confident learning says its label is wrong: p̂(given | x_i) below its class's threshold
    while another class's p̂(j | x_i) is above j's (out-of-sample probabilities of a probe on pretrained features).

    Args:
        check: look at the labels when ``fit`` sets up (a model with pretrained weights).
        exclude: leave the likely mislabeled training images out of training (implies ``check``).
        folds: k of the k-fold cross-validation that gives the out-of-sample probabilities.
    """

    def __init__(self, check: bool = False, exclude: bool = False, folds: int = 5):
        if folds < 2:
            raise ValueError(f"label_check.folds={folds} must be ≥ 2")
        self.check, self.exclude, self.folds = check or exclude, exclude, folds
        self.excluded: list[str] | None = None  # training images left out (exclude), kept in checkpoints
        self._saved: list[str] | None = None  # a resumed run's: those its checkpoint left out
        self._full = None  # the training split as listed
        self.found: list[list] = []  # rank 0: the rows of label_issues.csv

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or not self.check:
            return
        if not pl_module.has_pretrained_weights:
            rank_zero_info("Label check: skipped, the model has no pretrained weights to look with.")
            return
        try:
            require_cleanlab()
        except ImportError as err:
            rank_zero_info(f"Label check: skipped, {err}.")
            return
        dm = trainer.datamodule
        splits = dm.splits if isinstance(dm, SplitDatasets) and isinstance(dm, FeatureData) else {}
        if not splits or not all(isinstance(s, ImageList) for s in splits.values()):
            rank_zero_info(f"Label check: skipped, {type(dm).__name__} lists no image files to look at.")
            return
        suspects = self._look(trainer, pl_module, dm) if trainer.is_global_zero else None
        suspects = trainer.strategy.broadcast(suspects, src=0)
        if self.exclude and suspects is not None:
            self.excluded = suspects
            self._leave_out(dm, suspects)

    def on_fit_start(self, trainer, pl_module) -> None:
        """A resumed run: the checkpoint's list of left-out images, should this run's look have found others."""
        saved, self._saved = self._saved, None
        if saved is not None and saved != self.excluded:
            self.excluded = saved
            self._leave_out(trainer.datamodule, saved, original=True)

    def _look(self, trainer, pl_module, dm) -> list[str] | None:
        """Rank 0: features, ranking, files, the line; the likely mislabeled training images (None: not looked)."""
        names = [s for s in SPLITS if dm.has_split(s)]
        samples = [(s, path) for s in names for path, _ in dm.splits[s].samples]
        was_training = pl_module.training
        pl_module.to(trainer.strategy.root_device)  # where the strategy puts it next anyway
        pl_module.eval()
        try:
            parts = [self._features(trainer, pl_module, dm, s) for s in names]
        finally:
            pl_module.train(was_training)
        x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        try:
            report = check_labels(x, y, len(dm.class_names), self.folds, names=dm.class_names)
        except ValueError as err:
            rank_zero_info(f"Label check: skipped ({err}).")
            return None
        paths = [p for _, p in samples]
        rows = issue_rows(report, paths, list(dm.class_names))
        self.found = [[*row, samples[i][0]] for row, i in zip(rows, report.issues.tolist())]
        out = run_dir(trainer)
        csv = write_csv(out / "label_issues.csv", self.found, [*COLUMNS, "split"])
        if self.found:
            write_sheet(out / "label_issues.png", self.found[:SHEET], "L" if dm.num_channels == 1 else "RGB")
        suspects = [row[1] for row in self.found if row[-1] == "train"]
        if not self.found:
            rank_zero_info(f"Label check: no image looks mislabeled ({report.describe()}).")
        else:
            what = (
                f"the {len(suspects)} training one(s) are left out of training"
                if self.exclude
                else "they still train (--label_check.exclude true leaves them out)"
            )
            rank_zero_info(f"{len(self.found)} images look mislabeled: see {csv}; {what}")
        return suspects

    @staticmethod
    def _features(trainer, pl_module, dm, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The top features of ``split`` (rank 0 alone), with the stage blocks the probe may read beside them:
        the fine-tuning probe that follows reuses this pass (:func:`callbacks.probe_phase.split_features`)."""
        found = split_features(trainer, pl_module, dm, split, [TOP, *pl_module.stage_taps()], alone=True)
        return found.blocks[TOP], found.labels

    def _leave_out(self, dm, paths: list[str], original: bool = False) -> None:
        """The training split without ``paths`` (a copy of the dataset: its class keeps its other settings)."""
        if self._full is None:
            self._full = dm.splits["train"]
        out = set(paths)
        train = copy.copy(self._full)
        train.samples = [s for s in self._full.samples if s[0] not in out]
        dm.splits["train"] = train
        which = " (the checkpoint's list)" if original else ""
        rank_zero_info(f"Label check: {len(train.samples)} training images, {len(out)} left out{which}.")

    def state_dict(self) -> dict:
        return {"excluded": self.excluded} if self.excluded is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved = state_dict.get("excluded")
