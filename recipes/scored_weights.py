"""Weights a command must not use without a word, since their scores and predictions look like any others.

``zoo validate|test|predict`` without ``--ckpt_path`` score the network as the recipe builds it: refused where
its head was never trained. The head is untrained when nothing was loaded (a from-scratch recipe), or when the
pretrained weights' classifier is for another number of classes: timm's loader then keeps the new head's random
init (``load_pretrained`` drops a classifier whose size differs from ``num_classes``), and so does a local file's
loader. A pretrained network whose head fits (an ImageNet model scoring ImageNet) is scored as it is;
``--allow_untrained true`` scores any.

A checkpoint written by a diverged run (``checkpoint["diverged"]``, from ``BestCheckpoint``) is refused by
``zoo fit --ckpt_path`` and ``zoo predict``, and scored with a warning by ``zoo validate`` and ``zoo test``.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from zoo.errors import ZooError

HINT = (
    "give --ckpt_path CKPT (a .ckpt of `zoo fit`, or `last`: the newest last.ckpt of the recipe's runs), "
    "or --allow_untrained true to score it anyway"
)


def random_weights(model_config) -> bool:
    """Whether the model config loads no weights at all (neither ``pretrained`` nor ``pretrained_path``)."""
    return not (model_config.get("pretrained") or model_config.get("pretrained_path"))


def head_is_new(module) -> bool:
    """Whether the classifier of ``module.model`` (an ``ImageClassifier``'s network) kept its random init: the
    pretrained weights it was built from have no classifier of ``module.num_classes`` rows."""
    net = module.model
    cfg = getattr(net, "pretrained_cfg", None) or {}
    head = cfg.get("classifier")
    head = head[0] if isinstance(head, (list, tuple)) else head
    path = module.hparams.get("pretrained_path")
    if not path:  # timm's hub weights: their config gives the classifier's size
        return cfg.get("num_classes") != module.num_classes
    from zoo.models.backbones import convert_efficientnet_pytorch, is_efficientnet_pytorch, read_weights

    weights_only = (module.hparams.get("model_kwargs") or {}).get("weights_only", True)
    state = read_weights(path, weights_only)
    if is_efficientnet_pytorch(state):
        state = convert_efficientnet_pytorch(state, net)
    rows = state.get(f"{head}.weight")
    return rows is None or rows.shape[0] != module.num_classes


def refuse_untrained(subcommand: str, model_config, module=None) -> None:
    """One error line when ``zoo SUBCOMMAND`` (no ``--ckpt_path``) would score an untrained head: at once for
    random weights (``module`` None: nothing is built yet), from the built ``module`` for pretrained ones."""
    if module is None:
        if random_weights(model_config):
            raise ZooError(
                f"zoo {subcommand} without --ckpt_path would score a network with random weights (the recipe "
                f"trains from scratch: `zoo fit` trains it); {HINT}"
            )
    elif head_is_new(module):
        raise ZooError(
            f"zoo {subcommand} without --ckpt_path would score a pretrained backbone whose new "
            f"{module.num_classes}-class head was never trained; {HINT}"
        )


def refuse_diverged(subcommand: str, ckpt_path: str, why: str) -> None:
    """A checkpoint written by a diverged run (``BestCheckpoint`` marks it): ``fit`` would train on from its
    weights and ``predict`` would write their guesses, so both refuse it; ``validate`` and ``test`` say it."""
    said = f"{ckpt_path} was written by a run that diverged ({why})"
    if subcommand in ("validate", "test"):
        rank_zero_warn(f"{said}: its scores are those of diverged weights")
        return
    best = sorted(Path(ckpt_path).parent.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    use = "resume from" if subcommand == "fit" else "predict with"
    instead = f"{use} its best checkpoint {str(best[-1])!r} instead, or train" if best else "train"
    raise ZooError(f"{said}; {instead} again with a lower --model.optimizer.lr")
