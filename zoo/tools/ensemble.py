"""Model ensembles (CS231n Lecture 7, docs/notes.md): train several models, average their results at test time.

The ensemble's prediction is the mean of the members' softmax outputs, p(x) = (1/M)·Σ_m softmax(f_m(x)).
Neither Lightning nor timm averages separately trained checkpoints (timm's ``avg_checkpoints.py`` averages
*weights*, which is parameter averaging, not an ensemble), so the few functions below do it: load members
from checkpoints, collect each member's probabilities once, and score every member and the average with
torchmetrics. ``zoo ensemble`` and ``callbacks.SnapshotEnsemble`` both use them; the snapshot ensemble's
scores and report at the end of training are :func:`score_snapshots` and :func:`report_snapshots`.
"""

from __future__ import annotations

import copy
import csv
import inspect
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from zoo.runtime.checkpoint import TRUST_HINT, check_fits, read_checkpoint
from zoo.runtime.console import print_table as _print_table


def load_member(
    path: str | Path,
    template: nn.Module | None = None,
    weights_only: bool = True,
    trust_hint: str = TRUST_HINT,
) -> nn.Module:
    """An ``ImageClassifier`` holding the checkpoint's weights, in eval mode.

    ``template`` (the recipe's model) is copied and must fit the weights exactly; without it the model is
    rebuilt from the checkpoint's own hyper-parameters (members of different architectures).
    """
    from zoo.training.module import ImageClassifier

    ckpt = read_checkpoint(path, weights_only, trust_hint)
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if template is not None:
        model = copy.deepcopy(template)
    else:
        accepted = inspect.signature(ImageClassifier.__init__).parameters
        options = {k: v for k, v in hparams.items() if k in accepted}
        options.update(pretrained=False, pretrained_path=None)  # the checkpoint holds every weight
        model = ImageClassifier(**options)
    check_fits(model, ckpt["state_dict"], str(path), hparams.get("arch"))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


@torch.no_grad()
def predict_probs(
    model: nn.Module, loader, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, list | torch.Tensor]:
    """softmax(f(x)) of every input of ``loader`` (N×C, on the CPU) and the batches' second items
    (the labels, or the ids of a predict loader)."""
    was_training = model.training
    model.eval().to(device)
    probs, seconds = [], []
    for batch in loader:
        x, second = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
        probs.append(model(x.to(device)).float().softmax(-1).cpu())
        seconds.append(second)
    model.train(was_training)
    if seconds and all(isinstance(s, torch.Tensor) for s in seconds):
        return torch.cat(probs), torch.cat(seconds)
    return torch.cat(probs), [i for s in seconds if s is not None for i in s]


def average(probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The ensemble's prediction: (1/M)·Σ_m p_m."""
    if not probs:
        raise ValueError("an ensemble needs at least one member")
    return torch.stack(list(probs)).mean(0)


def score(probs: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy and the negative log-likelihood −mean log p_y of probabilities ``probs``."""
    top1 = multiclass_accuracy(probs, target, num_classes=probs.shape[-1], average="micro")
    nll = F.nll_loss(probs.clamp_min(1e-12).log(), target)
    return {"top1": float(top1), "nll": float(nll)}


def evaluate(
    members: dict[str, torch.Tensor], target: torch.Tensor, last: int | None = None
) -> dict[str, dict[str, float]]:
    """Scores of each member (by name, in order), of the average of all, and of the last ``last`` members."""
    names = list(members)
    out = {name: score(p, target) for name, p in members.items()}
    out[f"ensemble of {len(names)}"] = score(average(list(members.values())), target)
    if last is not None and 0 < last < len(names):
        out[f"ensemble of last {last}"] = score(average([members[n] for n in names[-last:]]), target)
    return out


def score_snapshots(
    model: nn.Module,
    paths: Sequence[str | Path],
    batches: Callable[[], Iterable],
    device: torch.device | str = "cpu",
    last: int | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` of ``model`` holding each checkpoint's weights in turn (rows ``snapshot 1``, …) and of
    their ensemble, on a fresh pass of ``batches()`` each (model-ready batches); the model's weights are
    put back afterwards."""
    current = {k: v.detach().clone() for k, v in model.state_dict().items()}
    members, target = {}, None
    try:
        for m, path in enumerate(paths, 1):
            model.load_state_dict(read_checkpoint(path)["state_dict"])
            members[f"snapshot {m}"], target = predict_probs(model, batches(), device)
    finally:
        model.load_state_dict(current)
    return evaluate(members, target, last)


def snapshot_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """Logged names of :func:`score_snapshots`' rows: ``snapshot/val_top1/3`` for ``snapshot 3``,
    ``…/ensemble`` for ``ensemble of M`` and ``…/ensemble_last2`` for ``ensemble of last 2``."""
    metrics = {}
    for name, s in results.items():
        key = name.split()[-1] if name.startswith("snapshot") else "ensemble"
        key += f"_last{name.split()[-1]}" if "last" in name else ""
        metrics[f"snapshot/val_top1/{key}"] = s["top1"]
    return metrics


def report_snapshots(results: dict[str, dict[str, float]], loggers: Sequence = (), step: int = 0) -> None:
    """Print :func:`score_snapshots`' table and log its top-1 figures (:func:`snapshot_metrics`) to ``loggers``."""
    print_table({"val": results}, title="Snapshot ensemble")
    metrics = snapshot_metrics(results)
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        logger.save()


def print_table(results: dict[str, dict[str, dict[str, float]]], title: str) -> None:
    """One row per member and ensemble, a top-1 and an NLL column per split: ``results[split][row]``."""
    columns = ["model"] + [f"{split} {what}" for split in results for what in ("top1", "NLL")]
    names = list(next(iter(results.values())))
    rows = [
        [row] + [f"{results[split][row][key]:.4f}" for split in results for key in ("top1", "nll")]
        for row in names
    ]
    bold = [i for i, row in enumerate(names) if row.startswith("ensemble")]
    _print_table(title, columns, rows, right=columns[1:], bold=bold)


def write_predictions(
    path: str | Path, probs: torch.Tensor, ids: Sequence, class_names: Sequence[str] | None, top_k: int = 3
) -> Path:
    """CSV ``path,class_1,prob_1,…`` of the ensemble's top-k classes, as ``zoo predict`` writes them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = min(top_k, probs.shape[-1])
    values, indices = probs.topk(k, dim=-1)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path"] + [h for i in range(1, k + 1) for h in (f"class_{i}", f"prob_{i}")])
        for ident, vals, idxs in zip(ids, values.tolist(), indices.tolist()):
            row = [str(ident)]
            for v, c in zip(vals, idxs):
                row += [class_names[c] if class_names else c, f"{v:.6f}"]
            writer.writerow(row)
    return path
