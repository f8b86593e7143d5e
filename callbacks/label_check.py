"""Likely mislabeled images, said in one line at the start of ``fit``; optionally trained without.

What ``zoo check-data PHOTOS --labels`` does, on the run's own data and backbone: the pretrained network runs once
over the training and validation images (eval mode, the eval preprocessing), and confident learning on the
probe's cross-validated probabilities (:mod:`zoo.label_issues`) ranks the images whose label looks wrong. The run
writes them to ``label_issues.csv`` (and the top ones to ``label_issues.png``) in its directory and says how many
there are; it never moves a file. With ``exclude`` the likely mislabeled training images are left out of the
training split (validation and test keep theirs: their scores stay comparable with other runs).

Under DDP global rank 0 alone looks at the images; the other processes get the list of excluded images from it.
A resumed run excludes the same images (kept in the checkpoint) and looks at nothing: its network is no longer
the pretrained one.
"""

from __future__ import annotations

import copy

import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from zoo.label_issues import COLUMNS, check_labels, issue_rows, require_cleanlab, write_csv, write_sheet
from zoo.loggers import run_dir
from zoo.probe import extract_features

SPLITS = ("train", "val")
SHEET = 20  # suspects on the contact sheet


class LabelCheck(Callback):
    """Flag image i when confident learning says its label is wrong: p̂(given | x_i) below its class's threshold
    while another class's p̂(j | x_i) is above j's (out-of-sample probabilities of a probe on pretrained features).

    Args:
        check: look at the labels when ``fit`` starts (a model with pretrained weights).
        exclude: leave the likely mislabeled training images out of training (implies ``check``).
        folds: k of the k-fold cross-validation that gives the out-of-sample probabilities.
    """

    def __init__(self, check: bool = False, exclude: bool = False, folds: int = 5):
        if folds < 2:
            raise ValueError(f"label_check.folds={folds} must be ≥ 2")
        self.check, self.exclude, self.folds = check or exclude, exclude, folds
        self.excluded: list[str] | None = None  # training images left out (exclude), kept in checkpoints
        self.found: list[list] = []  # rank 0: the rows of label_issues.csv

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self.check:
            return
        dm = trainer.datamodule
        if self.excluded is not None:  # resumed: the same images stay out
            self._leave_out(dm, self.excluded)
            return
        if trainer.ckpt_path or not pl_module.has_pretrained_weights:
            if not trainer.ckpt_path:
                rank_zero_info("Label check: skipped, the model has no pretrained weights to look with.")
            return
        try:
            require_cleanlab()
        except ImportError as err:
            rank_zero_info(f"Label check: skipped, {err}.")
            return
        splits = getattr(dm, "splits", {})
        if not hasattr(dm, "feature_dataloader") or not all(
            hasattr(splits.get(s), "samples") for s in splits
        ):
            rank_zero_warn(f"label_check: {type(dm).__name__} lists no image files to check; skipped")
            return
        suspects = self._look(trainer, pl_module, dm) if trainer.is_global_zero else None
        suspects = trainer.strategy.broadcast(suspects, src=0)
        if self.exclude and suspects is not None:
            self.excluded = suspects
            self._leave_out(dm, suspects)

    def _look(self, trainer, pl_module, dm) -> list[str] | None:
        """Rank 0: features, ranking, files, the line; the likely mislabeled training images (None: not looked)."""
        names = [s for s in SPLITS if dm.has_split(s)]
        samples = [(s, path) for s in names for path, _ in dm.splits[s].samples]
        was_training = pl_module.training
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
        loader = dm.feature_dataloader(split)
        batches = (trainer.strategy.batch_to_device(b) for b in loader)
        with trainer.precision_plugin.forward_context():
            return extract_features(pl_module, pl_module.classifier(), batches)

    @staticmethod
    def _leave_out(dm, paths: list[str]) -> None:
        """The training split without ``paths`` (a copy of the dataset: its class keeps its other settings)."""
        out = set(paths)
        train = copy.copy(dm.splits["train"])
        train.samples = [s for s in train.samples if s[0] not in out]
        dm.splits["train"] = train
        rank_zero_info(
            f"Label check: {len(dm.splits['train'].samples)} training images, {len(out)} left out."
        )

    def state_dict(self) -> dict:
        return {"excluded": self.excluded} if self.excluded is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self.excluded = state_dict.get("excluded")
