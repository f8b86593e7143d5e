"""The linear probe: a new head fitted to convergence on the frozen pretrained features.

The lectures' (docs/notes.md) transfer-learning advice for very little data is a linear classifier on top of the pretrained
features, and for a small problem a full-batch method run to convergence. The head is an L2-regularised
multinomial logistic regression, argmin_{W,b} C·Σ_i CE(W·f_i + b, y_i) + ½‖W‖², solved by scikit-learn's
``LogisticRegression`` (L-BFGS). C is chosen on a log grid by the validation split, or by stratified k-fold
cross-validation when the data is too small to hold images out (views of one image stay in one fold).

The lectures' advice for data unlike the pretraining data is "linear classifiers from different stages":
:func:`fit_stages` fits the probe on each candidate set of feature blocks (the top features, pooled outputs of
lower stages, alone and concatenated: :mod:`zoo.models.stage_head`) and keeps the best by the same validation or
cross-validation, the top features alone unless another set does better.

Pure functions over feature matrices, so the fit is tested against scikit-learn on its own; the phase that runs
the backbone over the images is :mod:`callbacks.probe_phase`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from zoo.models.stage_head import TOP

C_GRID = tuple(float(c) for c in np.logspace(-3, 3, 7))  # 1e-3, 1e-2, ..., 1e3
MAX_ITER = 2000
SMALL = 5_000_000  # feature matrices below this many values fit faster on one BLAS thread


@dataclass
class ProbeFit:
    """A fitted head (``weight`` K×D, ``bias`` K, for all K classes) and how C was chosen."""

    weight: np.ndarray
    bias: np.ndarray
    C: float
    score: float  # top-1 of the chosen C: on the validation split, or the mean over the folds
    loss: float  # cross-entropy of the chosen C, same data as ``score``
    how: str  # "validation split (N images)", "K-fold cross-validation", or why no choice was made
    train_top1: float
    seconds: float = 0.0

    def describe(self, images: int, views: int) -> str:
        seen = f"{images} training images" + (f" × {views} views" if views > 1 else "")
        return (
            f"Linear probe: logistic regression on the frozen features of {seen}; C = {self.C:.3g} chosen by "
            f"{self.how} (top-1 {self.score:.4f}, loss {self.loss:.4f}); train top-1 {self.train_top1:.4f}; "
            f"{self.seconds:.1f} s"
        )


@torch.no_grad()
def extract_features(
    forward: Callable[[torch.Tensor], torch.Tensor], head: nn.Module, batches: Iterable
) -> tuple[np.ndarray, np.ndarray]:
    """(features N×D, labels N): the inputs of ``head`` while ``forward`` runs over ``(x, y)`` batches.

    The features are caught by a forward pre-hook on the head, so any model whose classifier is one module
    (timm's ``get_classifier()``) works without a features API of its own. The caller sets eval mode.
    """
    caught: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: caught.append(args[0].detach().float().cpu()))
    labels = []
    try:
        for x, y in batches:
            forward(x)
            labels.append(torch.as_tensor(y).cpu())
    finally:
        hook.remove()
    if not caught:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(caught).flatten(1).numpy(), torch.cat(labels).numpy().astype(np.int64)


def _logistic(C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=MAX_ITER)


def _fit(model, x: np.ndarray, y: np.ndarray):
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    # a small problem spends 20× longer synchronising BLAS threads than computing
    with warnings.catch_warnings(), threadpool_limits(1 if x.size < SMALL else None):
        warnings.simplefilter("ignore", ConvergenceWarning)  # the largest C may stop at max_iter; still best
        return model.fit(x, y)


def _scores(model, x: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(top-1, cross-entropy) of ``model`` on (x, y), with classes it never saw at probability 0."""
    proba = np.zeros((len(x), num_classes))
    proba[:, model.classes_] = model.predict_proba(x)
    top1 = float((proba.argmax(1) == y).mean())
    loss = float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None)).mean())
    return top1, loss


def _path(Cs: Sequence[float], x, y, vx, vy, num_classes) -> list[tuple[float, float]]:
    """(top-1, loss) on (vx, vy) for each C, fitted on (x, y)."""
    return [_scores(_fit(_logistic(c), x, y), vx, vy, num_classes) for c in Cs]


def _best(Cs: Sequence[float], scores: list[tuple[float, float]]) -> int:
    """Index of the best C: highest top-1, then lowest loss (small validation sets tie on top-1)."""
    return min(range(len(Cs)), key=lambda i: (-round(scores[i][0], 9), scores[i][1]))


def head_from(model, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A K-row softmax head with the probabilities of a fitted ``LogisticRegression``.

    Multinomial: its rows as they are. Two classes: scikit-learn fits one row w (p(1) = σ(w·f + b)), which is
    the softmax of the rows (−w/2, w/2) and biases (−b/2, b/2). Classes absent from the fit get a bias of −30.
    """
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1 and len(model.classes_) == 2:
        coef, intercept = (
            np.concatenate([-coef / 2, coef / 2]),
            np.concatenate([-intercept / 2, intercept / 2]),
        )
    weight = np.zeros((num_classes, coef.shape[1]), np.float64)
    bias = np.full(num_classes, -30.0)
    weight[model.classes_], bias[model.classes_] = coef, intercept
    return weight, bias


def fit_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    val_features: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    Cs: Sequence[float] = C_GRID,
    folds: int = 5,
    seed: int = 0,
) -> ProbeFit:
    """Fit the probe on (features, labels); choose C on (val_features, val_labels) when given, else by
    stratified k-fold cross-validation over ``groups`` (one group per image: its views stay together)."""
    start = time.perf_counter()
    Cs = sorted(float(c) for c in Cs)
    if not len(Cs) or min(Cs) <= 0:
        raise ValueError(f"the probe's C grid must hold positive numbers, not {list(Cs)}")
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    if val_features is not None and len(val_labels):
        scores = _path(Cs, features, labels, val_features, val_labels, num_classes)
        how = f"the validation split ({len(val_labels)} images)"
    else:
        per_class = np.bincount(labels[np.unique(groups, return_index=True)[1]], minlength=num_classes)
        k = int(min(folds, per_class[per_class > 0].min()))
        if k < 2 or len(Cs) == 1:
            C = 1.0 if len(Cs) > 1 else Cs[0]
            model = _fit(_logistic(C), features, labels)
            top1, loss = _scores(model, features, labels, num_classes)
            weight, bias = head_from(model, num_classes)
            why = "default (one image in a class: nothing to cross-validate)" if k < 2 else "the given value"
            return ProbeFit(weight, bias, C, top1, loss, why, top1, time.perf_counter() - start)
        from sklearn.model_selection import StratifiedGroupKFold

        split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        per_fold = [
            _path(Cs, features[tr], labels[tr], features[te], labels[te], num_classes)
            for tr, te in split.split(features, labels, groups)
        ]
        scores = [tuple(float(np.mean([f[i][j] for f in per_fold])) for j in (0, 1)) for i in range(len(Cs))]
        how = f"{k}-fold cross-validation"
    best = _best(Cs, scores)
    model = _fit(_logistic(Cs[best]), features, labels)
    weight, bias = head_from(model, num_classes)
    train_top1, _ = _scores(model, features, labels, num_classes)
    top1, loss = scores[best]
    return ProbeFit(weight, bias, Cs[best], top1, loss, how, train_top1, time.perf_counter() - start)


@dataclass
class StageChoice:
    """The stage set a probe reads (``stages``: blocks side by side; ``(TOP,)``: the usual classifier), its fit
    (weights already scaled for the raw blocks), every candidate's (top-1, loss), and ``why`` in a sentence."""

    stages: tuple[str, ...]
    fit: ProbeFit
    scores: dict[tuple[str, ...], tuple[float, float]]
    why: str


def block_scales(blocks: Sequence[np.ndarray]) -> list[float]:
    """sᵦ = rms(x₀) / rms(xᵦ): each block scaled to the first's root-mean-square, so the L2 penalty weighs the
    blocks alike (pooled stage outputs are far smaller than the top features)."""
    rms = [float(np.sqrt(np.mean(np.square(b, dtype=np.float64)))) or 1.0 for b in blocks]
    return [rms[0] / r for r in rms]


def stack_blocks(blocks: Sequence[np.ndarray], scales: Sequence[float]) -> np.ndarray:
    """[s₀x₀, s₁x₁, …] side by side: the matrix the probe of a stage set is fitted on."""
    return np.concatenate([b * s for b, s in zip(blocks, scales)], axis=1)


def candidate_sets(stages: Sequence[str]) -> list[tuple[str, ...]]:
    """The stage sets to try, top features first: the top alone, each stage alone, then the top with the
    deepest one, two, … stages (``stages`` deepest first)."""
    sets = [(TOP,)] + [(s,) for s in stages]
    sets += [(TOP, *stages[:k]) for k in range(1, len(stages) + 1)]
    return list(dict.fromkeys(sets))


def fit_stages(
    train: dict[str, np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    val: dict[str, np.ndarray] | None = None,
    val_labels: np.ndarray | None = None,
    candidates: Sequence[tuple[str, ...]] | None = None,
    **options,
) -> StageChoice:
    """:func:`fit_head` on each candidate set of the feature blocks ``train`` (name → N×Dᵦ; ``TOP`` first) and
    the best by (top-1, then loss); the top features alone unless the best has a higher top-1. The chosen fit's
    weights act on the raw blocks side by side (the scales folded in), in the order of the set; ``options`` go
    to :func:`fit_head`."""
    candidates = list(candidates or candidate_sets([k for k in train if k != TOP]))
    scale = dict(zip(train, block_scales(list(train.values()))))
    fits, scores = {}, {}
    for names in candidates:
        s = [scale[n] for n in names]
        x = stack_blocks([train[n] for n in names], s)
        vx = stack_blocks([val[n] for n in names], s) if val is not None else None
        fit = fit_head(x, labels, num_classes, vx, val_labels, **options)
        columns = np.concatenate([np.full(train[n].shape[1], c) for n, c in zip(names, s)])
        fit.weight = fit.weight * columns  # W·(s ⊙ x) = (W·diag(s))·x: the head reads the raw blocks
        fits[names], scores[names] = fit, (fit.score, fit.loss)
    best = min(candidates, key=lambda n: (-round(scores[n][0], 9), scores[n][1]))
    top = scores.get((TOP,))
    if top is not None and round(scores[best][0], 9) <= round(top[0], 9):
        best = (TOP,)  # another set must classify more images right: a lower loss alone is too weak a sign
    said = ", ".join(f"{'+'.join(n)} {scores[n][0]:.4f}" for n in candidates)
    if best == (TOP,):
        why = f"no stage set classifies more images right than the top features ({said}; top-1 by {fits[best].how})"
    elif top is None:
        why = f"the best of {said} (top-1 by {fits[best].how})"
    else:
        why = (
            f"{'+'.join(best)} classifies more images right than the top features alone ({scores[best][0]:.4f} "
            f"against {top[0]:.4f} top-1, by {fits[best].how}; all: {said})"
        )
    return StageChoice(best, fits[best], scores, why)


def load_head(head: nn.Module, fit: ProbeFit) -> None:
    """Copy the fitted ``weight``/``bias`` into the classifier ``head`` (an ``nn.Linear``-like module)."""
    weight = torch.as_tensor(fit.weight, dtype=head.weight.dtype, device=head.weight.device)
    if tuple(weight.shape) != tuple(head.weight.shape):
        raise ValueError(
            f"the probe fitted a {tuple(weight.shape)} head, but the model's classifier is "
            f"{tuple(head.weight.shape)}"
        )
    with torch.no_grad():
        head.weight.copy_(weight)
        if head.bias is not None:
            head.bias.copy_(torch.as_tensor(fit.bias, dtype=head.bias.dtype, device=head.bias.device))


__all__ = [
    "C_GRID",
    "TOP",
    "ProbeFit",
    "StageChoice",
    "block_scales",
    "candidate_sets",
    "extract_features",
    "fit_head",
    "fit_stages",
    "head_from",
    "load_head",
    "stack_blocks",
]
