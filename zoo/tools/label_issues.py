"""Likely label errors and near-duplicates among labelled images, from frozen pretrained features.

Confident learning (Northcutt et al. 2021): with out-of-sample probabilities p̂(k | x_i), the confident joint counts
the images of given label i whose p̂(j | x_i) ≥ t_j (t_j = the mean p̂(j) over the images labelled j); the
off-diagonal mass estimates how many labels are wrong, and the images that most confidently belong elsewhere are
flagged, ranked by self-confidence p̂(given label | x) (lowest first). ``cleanlab`` does all of it
(``cleanlab.filter.find_label_issues``). The probabilities come from k-fold cross-validation of the linear probe
(:mod:`zoo.training.probe`: its C chosen by cross-validation, then scikit-learn's ``cross_val_predict``): no image is
scored by a probe that saw it. Near-duplicates are pairs of images of different classes whose features point
the same way (cosine ≥ a threshold): a copy of a photo filed under two classes, resized or re-encoded.

Pure functions over feature matrices; running a backbone over images is :func:`zoo.training.probe.extract_features`.
"""

from __future__ import annotations

import csv
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.training.probe import fit_head

INSTALL = "pip install 'lightning-zoo[inspect]' (cleanlab)"
SIMILAR = 0.9  # cosine of two photos' features above which they are near-duplicates (docs/data.md)
CHUNK = 2048  # rows of the similarity matrix computed at once
SMALL = 5_000_000  # below this many feature values one BLAS thread is faster (zoo.training.probe)
MAX_ITER = 2000  # L-BFGS iterations of each fold's probe, as the probe's own fit


@dataclass
class LabelReport:
    """``issues``: positions of the likely mislabeled images, most suspicious first; ``probs``: the N×K
    out-of-sample probabilities; ``duplicates``: (i, j, cosine) pairs of different classes, most similar first."""

    labels: np.ndarray
    probs: np.ndarray
    issues: np.ndarray
    C: float
    folds: int
    duplicates: list[tuple[int, int, float]] = field(default_factory=list)
    seconds: float = 0.0

    def suggested(self, i: int) -> int:
        return int(self.probs[i].argmax())

    def describe(self) -> str:
        return (
            f"confident learning on {self.folds}-fold out-of-sample probabilities of a linear probe (C = "
            f"{self.C:.3g}) on {len(self.labels)} images' pretrained features"
        )


def folds_for(
    labels: Sequence[int], num_classes: int, folds: int = 5, names: Sequence[str] | None = None
) -> int:
    """k of the stratified k-fold split: ``folds``, or the images of the rarest class when fewer; a class of fewer
    than 2 images is a ValueError that names it."""
    if folds < 2:
        raise ValueError(f"folds={folds}: cross-validation needs 2 folds or more")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if counts.min() < 2:
        rare = int(counts.argmin())
        raise ValueError(
            f"class {names[rare] if names else rare!r} has {counts[rare]} image(s): cross-validation needs 2 or "
            "more images in every class"
        )
    return int(min(folds, counts.min()))


def out_of_sample_probs(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    folds: int = 5,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, float, int]:
    """(N×K probabilities, C, k): each image's class probabilities from a probe fitted on the other folds of a
    stratified k-fold split (k = ``folds``, or fewer when a class has fewer images)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    k = folds_for(labels, num_classes, folds, names)
    fit = fit_head(features, labels, num_classes, folds=k, seed=seed)  # C by cross-validation, as the probe's
    split = StratifiedKFold(k, shuffle=True, random_state=seed)
    with warnings.catch_warnings(), threadpool_limits(1 if features.size < SMALL else None):
        warnings.simplefilter(
            "ignore", ConvergenceWarning
        )  # a large C may stop at max_iter; the ranking holds
        probe = LogisticRegression(C=fit.C, max_iter=MAX_ITER)
        probs = cross_val_predict(probe, features, labels, cv=split, method="predict_proba")
    return probs, fit.C, k


def require_cleanlab() -> None:
    """Raise ImportError, saying what to install, when cleanlab is missing (before any feature is computed)."""
    import importlib.util

    if importlib.util.find_spec("cleanlab") is None:
        raise ImportError(f"finding mislabeled images needs cleanlab: {INSTALL}")


def find_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Positions of the likely label errors, ranked by self-confidence p̂(given | x), lowest first (cleanlab)."""
    require_cleanlab()
    from cleanlab.filter import find_label_issues

    return np.asarray(
        find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1), dtype=np.int64
    )


def near_duplicates(
    features: np.ndarray, labels: np.ndarray, threshold: float = SIMILAR
) -> list[tuple[int, int, float]]:
    """Pairs (i, j), i < j, of differently labelled images whose features have cosine ≥ ``threshold``."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    pairs = []
    for start in range(0, len(unit), CHUNK):
        sims = unit[start : start + CHUNK] @ unit.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, j in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if i < j and labels[i] != labels[j]:
                pairs.append((i, j, float(sims[r, j])))
    return sorted(pairs, key=lambda p: -p[2])


def check_labels(
    features: np.ndarray,
    labels: Sequence[int],
    num_classes: int,
    folds: int = 5,
    seed: int = 0,
    similar: float = SIMILAR,
    names: Sequence[str] | None = None,
) -> LabelReport:
    """Likely label errors and cross-class near-duplicates of the images whose features are ``features``."""
    start = time.perf_counter()
    labels = np.asarray(labels, dtype=np.int64)
    probs, C, k = out_of_sample_probs(features, labels, num_classes, folds, seed, names)
    issues = find_issues(labels, probs)
    duplicates = near_duplicates(features, labels, similar)
    return LabelReport(labels, probs, issues, C, k, duplicates, time.perf_counter() - start)


def issue_rows(report: LabelReport, paths: Sequence[str], names: Sequence[str]) -> list[list]:
    """``[rank, path, given, suggested, confidence, p_given]`` per likely mislabeled image, most suspicious first;
    confidence = p̂(suggested | x), p_given = p̂(given | x) (cleanlab's self-confidence, its ranking score)."""
    rows = []
    for rank, i in enumerate(report.issues.tolist(), 1):
        given, suggested = int(report.labels[i]), report.suggested(i)
        p = report.probs[i]
        rows.append(
            [rank, paths[i], names[given], names[suggested], f"{p[suggested]:.3f}", f"{p[given]:.3f}"]
        )
    return rows


COLUMNS = ["rank", "path", "given", "suggested", "confidence", "p_given"]


def write_sheet(path: Path, rows: list[list], mode: str = "RGB", cols: int = 5) -> Path:
    """A contact sheet of the images of ``rows`` (as :func:`issue_rows` gives them), each under its rank, name,
    given and suggested label."""
    from zoo.tools.sheet import contact_sheet, pixels, save, thumbnail

    cells = [[pixels(thumbnail(r[1], mode))] for r in rows]
    titles = [f"#{r[0]} {Path(r[1]).name}\ngiven: {r[2]}\nsuggested: {r[3]} ({r[4]})" for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    save(contact_sheet(cells, titles, cols=cols, inches=2.0), path)
    return path


def write_csv(path: Path, rows: list[list], columns: Sequence[str] = COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


__all__ = [
    "COLUMNS",
    "INSTALL",
    "SIMILAR",
    "LabelReport",
    "check_labels",
    "find_issues",
    "folds_for",
    "issue_rows",
    "near_duplicates",
    "out_of_sample_probs",
    "require_cleanlab",
    "write_csv",
    "write_sheet",
]
