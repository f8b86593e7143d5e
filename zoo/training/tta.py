"""Test-time augmentation (``zoo test|predict --tta``): p̄ = (1/V) Σ_v softmax(f(view_v(x))), over V views of x.

The views are split where the sizes are known:

- ``crops`` and ``scales`` are made by the data module's eval transform (:func:`zoo.data.transforms.view_transform`:
  torchvision's ``FiveCrop`` of a larger resize, or the centre crop at three zooms), which needs the image before
  it is resized to the model's input; the batch then holds N×V×C×H×W uint8 views, normalised on the device as
  any batch.
- ``flip`` is a mirror of each view along the width, ``torch.flip(x, [-1])``, made by the model on the
  normalised batch (:func:`view_scores`): it needs no size and works with any data module.

``flip+crops`` is the ten-crop (five crops and their mirrors, torchvision's ``TenCrop``). The model averages the
softmax over every view (:func:`view_scores`). Whether a flip keeps the label is the data's to say
(``data.flip_invariant``; false for digits): :func:`configure` refuses ``flip`` otherwise. timm has no TTA helper
(``timm.data`` makes single eval crops), and torchvision's multi-crops return views, not averages: the averaging
and the checks are this module's.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch.utilities import rank_zero_info

from zoo.errors import ZooError
from zoo.protocols import EvalViews

MODES = ("none", "flip", "crops", "scales", "flip+crops", "flip+scales")
COMMANDS = ("test", "predict")
DESCRIBED = {
    "flip": "the image and its mirror",
    "crops": "four corner crops and the centre crop",
    "scales": "the centre crop at 3 zooms",
    "flip+crops": "the five crops and their mirrors",
    "flip+scales": "3 zooms and their mirrors",
}


def parse(mode: str | None) -> tuple[bool, str | None]:
    """``(flip, views)`` of a ``--tta`` value: ``"flip+crops"`` → ``(True, "crops")``, ``"none"`` → ``(False, None)``."""
    mode = mode or "none"
    if mode not in MODES:
        raise ZooError(f"--tta {mode!r}: choose one of {', '.join(MODES)}")
    parts = set(mode.split("+")) - {"none"}
    views = next((p for p in parts if p != "flip"), None)
    return "flip" in parts, views


def view_scores(model, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """``model(x)`` for a plain N×C×H×W batch; for views (N×V×C×H×W, or ``flip``) log p̄ of the module docstring,
    p̄ = (1/V) Σ_v softmax(model(x_v)), computed as logsumexp_v log_softmax − log V (no log 0).

    log p̄ stands in for the logits: its softmax is p̄, its arg-max and top-k are p̄'s, and cross-entropy on it is
    −log p̄_y. One view at a time goes through the model, so memory is that of a batch without views."""
    if x.dim() == 4 and not flip:
        return model(x)
    logs = []
    for view in x.unbind(1) if x.dim() == 5 else (x,):
        logs.append(model(view).float().log_softmax(-1))
        if flip:
            logs.append(model(view.flip(-1)).float().log_softmax(-1))
    return torch.stack(logs).logsumexp(0) - math.log(len(logs))


def flip_invariant(datamodule) -> bool:
    """The data's declaration ``flip_invariant`` (a hyper-parameter of the zoo's data modules); true when a data
    module does not declare it."""
    hparams = getattr(datamodule, "hparams", None) or {}
    return bool(hparams.get("flip_invariant", True))


def configure(mode: str | None, command: str | None, model, datamodule) -> int:
    """Set up ``--tta MODE`` for ``zoo COMMAND``: the model's flip, the data module's views. Returns the views per
    image (1: none). A mode the data cannot take is refused with the reason, before anything runs."""
    flip, views = parse(mode)
    if not flip and views is None:
        return 1
    if command not in COMMANDS:
        raise ZooError(
            f"--tta {mode} applies to zoo test and zoo predict, not zoo {command}; "
            f"evaluate the trained checkpoint with: zoo test ... --ckpt_path CKPT --tta {mode}"
        )
    name = type(datamodule).__name__
    if flip and not flip_invariant(datamodule):
        raise ZooError(
            f"--tta {mode}: mirrored images of this data change class ({name} declares data.flip_invariant "
            "false; e.g. a mirrored digit is another symbol, or none), so averaging over the flip would mix in "
            "wrong answers; use --tta none, or --data.flip_invariant true if mirrored images keep their class"
        )
    if views is not None and not isinstance(datamodule, EvalViews):
        raise ZooError(
            f"--tta {mode}: {name} has no eval resize to take {views} from (its images are fixed tensors); "
            "crops and scales come with the image data modules (image folder, ImageNet, CIFAR, streaming)"
            + ("; use --tta flip" if flip_invariant(datamodule) else "")
        )
    model.tta_flip = flip
    if views is not None:
        datamodule.eval_views = views
    from zoo.data.transforms import VIEW_COUNTS

    count = VIEW_COUNTS.get(views, 1) * (2 if flip else 1)
    rank_zero_info(f"Test-time augmentation: {count} views per image ({DESCRIBED[mode]}), softmax averaged")
    return count
