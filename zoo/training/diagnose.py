"""Read a loss curve the way the lectures (docs/notes.md) do: bug, lr too high or too low, bad initialisation, not converged,
overfitting, underfitting. Pure functions over per-epoch histories, so the rules can be tested on their own."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class History:
    """Per-epoch means; ``initial_loss`` is the loss of the first training batch."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    initial_loss: float | None = None
    skipped_nonfinite: int = 0


@dataclass
class Finding:
    kind: str  # diverged | no_progress | lr_too_high | bad_init | lr_too_low | not_converged | overfitting
    # | underfitting | healthy
    message: str


def _drop(a: float, b: float) -> float:
    """Relative decrease from a to b."""
    return (a - b) / max(abs(a), 1e-12)


def diagnose(h: History) -> list[Finding]:
    """Findings for a finished (or stopped) run, most severe first; ``healthy`` when nothing is wrong."""
    out: list[Finding] = []
    losses = h.train_loss
    if h.skipped_nonfinite or any(not math.isfinite(v) for v in losses):
        out.append(
            Finding(
                "diverged",
                "the loss became NaN/inf: the learning rate is too high (or the "
                "inputs hold NaN); lower the lr or add warmup",
            )
        )
        return out
    if len(losses) < 2:
        return [Finding("healthy", "too few epochs to read the curve")]
    start = h.initial_loss if h.initial_loss is not None else losses[0]
    best, last = min(losses), losses[-1]
    if last > 1.2 * start:
        return [
            Finding(
                "diverged",
                f"the training loss grew from {start:.3g} to {last:.3g}: the learning rate is too high",
            )
        ]
    if _drop(start, best) < 0.1:
        return [
            Finding(
                "no_progress",
                f"the training loss barely moved ({start:.3g} → {best:.3g}): look for a "
                "bug (labels, inputs, a frozen model) or an lr far too low",
            )
        ]
    n = len(losses)
    k = max(1, n // 5)
    early = _drop(start, losses[k - 1])
    later = _drop(losses[k - 1], best)
    if early < 0.05 and later > 0.3:
        out.append(
            Finding(
                "bad_init",
                f"a slow start: flat for the first {k} epoch(s), then a drop: suspect the "
                "initialisation (try He / 1/sqrt(fan_in), or BatchNorm)",
            )
        )
    tail = losses[-k - 1 :]
    tail_drop = _drop(tail[0], tail[-1])
    steady = all(b < a for a, b in zip(losses, losses[1:]))
    if steady and _drop(start, last) < 0.5 and tail_drop > 0.05:
        out.append(
            Finding(
                "lr_too_low",
                "the loss falls slowly and steadily, nearly a straight line: the "
                "learning rate is probably too low",
            )
        )
    elif _drop(start, losses[0]) > 0.3 and tail_drop < 0.01 and last > 0.5 * start:
        out.append(
            Finding(
                "lr_too_high",
                f"a fast first drop, then a plateau at {last:.3g}: the learning rate "
                "is probably too high (or decay it)",
            )
        )
    if h.val_loss and len(h.val_loss) == n:
        best_epoch = min(range(n), key=h.val_loss.__getitem__)
        rising = h.val_loss[-1] > 1.1 * h.val_loss[best_epoch] and best_epoch < n - k
        gap = (h.train_acc[-1] - h.val_acc[-1]) if h.train_acc and h.val_acc else 0.0
        if rising and losses[-1] < losses[best_epoch]:
            out.append(
                Finding(
                    "overfitting",
                    f"validation loss was lowest at epoch {best_epoch} and rose since while "
                    "the training loss kept falling: overfitting (more data or "
                    "augmentation, dropout, weight decay, or stop earlier)",
                )
            )
        elif gap > 0.15:
            out.append(Finding("overfitting", f"train top-1 is {gap:.0%} above validation: overfitting"))
    if h.val_acc and len(h.val_acc) >= 3 and not any(f.kind in ("overfitting", "lr_too_low") for f in out):
        best_acc = max(h.val_acc)
        if h.val_acc[-1] >= best_acc and h.val_acc[-1] > h.val_acc[-1 - k] + 0.01:
            out.append(
                Finding(
                    "not_converged",
                    "validation accuracy was still rising at the end: not converged "
                    "yet: train longer or raise the lr",
                )
            )
    # underfitting, unless another reading already says why the training loss is still high
    explained = {"overfitting", "lr_too_low", "lr_too_high", "not_converged"}
    under = underfitting(h)
    if under and not explained & {f.kind for f in out}:
        out.append(under)
    return out or [Finding("healthy", "the curves look healthy: a fast drop, then a slow approach")]


POOR = 1 / 3  # a final training loss above this share of the first one is poor
CLOSE = 0.15  # validation loss at most this much above the training loss (and top-1 within 5 points) is close


def underfitting(h: History) -> Finding | None:
    """Train and val both poor and close together: L_train,end > ``POOR`` × L_start and
    L_val,end ≤ (1 + ``CLOSE``) × L_train,end (and train top-1 − val top-1 < 0.05 when both are logged)."""
    if not h.train_loss or not h.val_loss or len(h.train_loss) < 2:
        return None
    start = h.initial_loss if h.initial_loss is not None else h.train_loss[0]
    train, val = h.train_loss[-1], h.val_loss[-1]
    gap = (h.train_acc[-1] - h.val_acc[-1]) if h.train_acc and h.val_acc else 0.0
    if train > POOR * start and val <= (1 + CLOSE) * train and gap < 0.05:
        return Finding(
            "underfitting",
            f"training and validation losses end close together and both high ({train:.3g} and {val:.3g}, from "
            f"{start:.3g}): underfitting: a bigger model, less regularisation (dropout, weight decay, "
            "augmentation), or train longer",
        )
    return None
