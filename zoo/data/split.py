"""Stratified train / validation / test split with a fixed seed (tune on validation, report on test)."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels, val_fraction: float, test_fraction: float, seed: int = 0
) -> dict[str, np.ndarray]:
    """Indices of ``train``, ``val`` and ``test``, each holding every class in proportion to ``labels``."""
    from sklearn.model_selection import train_test_split

    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and sum below 1"
        )
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    out: dict[str, np.ndarray] = {}
    rest = idx
    if test_fraction > 0:
        rest, out["test"] = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    if val_fraction > 0:
        rest, out["val"] = train_test_split(
            rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest], random_state=seed
        )
    out["train"] = rest
    return {k: np.sort(v) for k, v in out.items()}
