"""The ``run`` section: what every zoo run adds to its recipe's trainer, declared in ``recipes/base.yaml``.

The CLI reads ``recipes/base.yaml`` before any recipe (jsonargparse's ``default_config_files``), so
``--print_config`` shows the section and ``--run.NAME null`` (or ``false``) switches an entry off. The callbacks
go into the trainer's list where ``base.yaml``'s header says (:func:`arrange`); the settings are applied to the
trainer once it is built (:func:`apply_settings`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichModelSummary, RichProgressBar
from lightning.pytorch.loggers import WandbLogger

from recipes.rendezvous import hold_rendezvous_port, own_started_ranks
from zoo import compat

BASE_RECIPE = Path(__file__).with_name("base.yaml")
# the section's callbacks, by where they go in the trainer's list (recipes/base.yaml's header)
FIRST = ("resume_optimizer",)  # before every other callback
DEFAULTS = {"progress_bar": RichProgressBar, "model_summary": RichModelSummary}  # in place of Lightning's own
BEFORE_CHECKPOINTS = ("resume_validation",)
# after the checkpoint callbacks; "explain" is `zoo predict --explain`'s, not an entry of the section
LAST = ("wandb_run_id", "run_phase", "interrupt", "run_length", "explain", "evaluate_once", "exact_resume")
CALLBACKS = (*FIRST, *DEFAULTS, *BEFORE_CHECKPOINTS, *(name for name in LAST if name != "explain"))
SETTINGS = {
    "fill_uninitialized_memory": "with --trainer.deterministic true, PyTorch fills every new tensor with NaN first, "
    "in case an op reads memory it never wrote (~5 %% of a CPU step); false: it does not (PyTorch's advice for "
    "programs that never do, which stay deterministic).",
    "skip_empty_hooks": "the callbacks' per-batch hooks that do nothing are not called (Lightning calls every "
    "hook of a step on every callback, ~2 µs a call); the run is the same bit for bit.",
    "hold_rendezvous_port": "a one-node DDP run that this process launches binds its MASTER_PORT until its "
    "processes meet there, so that no job started at the same time is given the same port.",
}


def add_arguments(parser) -> None:
    """The ``run.*`` options: one per callback (a callback or null) and per setting (a bool); their values are
    in ``recipes/base.yaml``."""
    for name in CALLBACKS:
        parser.add_argument(
            f"--run.{name}",
            type=Callback | None,
            default=None,
            help=f"The run's {name.replace('_', ' ')} callback (recipes/base.yaml, docs/cli.md); null: none.",
        )
    for name, text in SETTINGS.items():
        parser.add_argument(f"--run.{name}", type=bool, default=False, help=text)


def chosen(run, recipe: list[Callback], **extra: Callback | None) -> dict[str, Callback]:
    """The section's callbacks to put, by name: those not null and of no kind the recipe's ``trainer.callbacks``
    already holds; ``extra``: callbacks of other options, by their place in :data:`LAST`."""
    out = {}
    for name in CALLBACKS:
        callback = run.get(name) if run is not None else None
        if callback is None or any(isinstance(c, DEFAULTS.get(name, type(callback))) for c in recipe):
            continue
        out[name] = callback
    return {**out, **{name: c for name, c in extra.items() if c is not None}}


def arrange(
    callbacks: list[Callback], recipe: list[Callback], run: dict[str, Callback], loggers
) -> list[Callback]:
    """The trainer's callbacks (``callbacks``: as Lightning ordered them, the checkpoint callbacks last) in the
    order ``recipes/base.yaml`` states: ``resume_optimizer``; Lightning's list, with its own progress bar and
    model summary (those not in ``recipe``) replaced by the section's, and ``resume_validation`` before the
    checkpoint callbacks; then the others of :data:`LAST` (``wandb_run_id`` only with a W&B logger)."""
    given = {id(c) for c in recipe}
    if not any(isinstance(logger, WandbLogger) for logger in loggers):
        run = {name: c for name, c in run.items() if name != "wandb_run_id"}
    listed = []
    for callback in callbacks:
        kind = next((name for name, k in DEFAULTS.items() if isinstance(callback, k)), None)
        own = kind is not None and id(callback) not in given and kind in run
        listed.append(run[kind] if own else callback)
    checkpoints = next((i for i, c in enumerate(listed) if isinstance(c, ModelCheckpoint)), len(listed))
    before = [run[name] for name in BEFORE_CHECKPOINTS if name in run]
    return [
        *(run[name] for name in FIRST if name in run),
        *listed[:checkpoints],
        *before,
        *listed[checkpoints:],
        *(run[name] for name in LAST if name in run),
    ]


def apply_settings(trainer, run, launching: bool) -> None:
    """The section's settings on a built trainer (``launching``: a run that will start, not a recipe only built,
    which binds no port)."""
    if launching:
        own_started_ranks(trainer)  # ended with this process if it fails
    if run is None:
        return
    if torch.are_deterministic_algorithms_enabled():  # set by --trainer.deterministic true
        torch.utils.deterministic.fill_uninitialized_memory = bool(run.get("fill_uninitialized_memory"))
    if run.get("skip_empty_hooks"):
        compat.skip_empty_hooks(trainer.callbacks)
    if launching and run.get("hold_rendezvous_port"):
        hold_rendezvous_port(trainer)  # a DDP run's MASTER_PORT, bound until its processes meet there
