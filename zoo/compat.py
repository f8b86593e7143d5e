"""Every use of a library's private API, and every process-wide side effect, in one place.

Each entry says what it relies on and the version it was checked on; when a library changes, this is the one
file to read. Importing this module imports nothing heavy (no torch, no Lightning): the fast commands use it.

| what | relies on | checked on |
|---|---|---|
| :func:`hide_wandb_while_timm_imports` | ``timm.utils.summary`` trying ``import wandb`` at import time | timm 1.0.31, wandb 0.31 |
| :func:`quiet_known_warnings` | the text of a torch deprecation raised inside Lightning, of Lightning's "💡 Tip:" lines, and of its warning when ``training_step`` returns None | torch 2.14.1, lightning 2.6.6 |
| :func:`ignore_eval_mode_warning` | the text of Lightning's "module(s) in eval mode" warning | lightning 2.6.6 |
| :func:`wandb_run` | ``WandbLogger._experiment`` (the run, or None before it is created) | lightning 2.6.6 |
| :func:`request_stop` | ``Trainer._signal_connector.received_sigterm`` (what ``trainer.received_sigterm`` reads) | lightning 2.6.6 |
| :func:`validate_in_fit` | what ``_TrainingEpochLoop.on_advance_end`` does to run the validation loop inside ``fit`` (``_should_check_val_epoch()``, ``trainer.validating``, the logger connector's ``_first_loop_iter``, ``fit_loop.epoch_loop.val_loop``: ``restarting``, ``run()``, ``skip``) | lightning 2.6.6 |
| :func:`hub_offline` | ``huggingface_hub.constants.HF_HUB_OFFLINE``, read by ``is_offline_mode()`` at each call | huggingface_hub 2.4.0 |
| :func:`rewrap_ddp` | ``DistributedDataParallel._remove_autograd_hooks`` and Lightning's ``DDPStrategy.configure_ddp`` | torch 2.14.1, lightning 2.6.6 |
| ``ZooCLI._parse_ckpt_path`` (recipes) | LightningCLI's private hook that reads a checkpoint's hyper-parameters | lightning 2.6.6 |
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings

# --- timm and wandb -------------------------------------------------------------------------------------------


class _HideWandbDuringTimm:
    """A ``sys.meta_path`` finder: finds ``timm`` the usual way, and runs its first import with
    ``sys.modules["wandb"] = None``."""

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        sys.meta_path.remove(self)  # once: timm is about to be imported
        import importlib.util

        spec = importlib.util.find_spec("timm")
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):
            hide = "wandb" not in sys.modules
            if hide:
                sys.modules["wandb"] = None  # `import wandb` raises ImportError while this is set
            try:
                run(module)
            finally:
                if hide and sys.modules.get("wandb", False) is None:
                    del sys.modules["wandb"]

        loader.exec_module = exec_module
        return spec


def hide_wandb_while_timm_imports() -> None:
    """Make timm's first import skip W&B, so only runs that log to W&B import it.

    ``timm.utils.summary`` does ``try: import wandb`` at import time (0.3 s, and a W&B import in every run that
    never uses it). Hiding the module during that one import makes the ``try`` fall through; wandb loads
    later, the first time a W&B run is created. Only timm's own W&B hook (``timm.utils.update_summary(...,
    log_wandb=True)``, used by timm's training script, not by the zoo) loses it. Nothing is imported now:
    the hiding happens when something first imports timm.
    """
    if "timm" in sys.modules or any(isinstance(f, _HideWandbDuringTimm) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _HideWandbDuringTimm())


# --- warnings and banners -------------------------------------------------------------------------------------

LEAFSPEC_DEPRECATION = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated"  # torch 2.14, from Lightning's _pytree
)
EVAL_MODE_WARNING = r"Found \d+ module\(s\) in eval mode at the start of training"  # Lightning's
CKPT_PATH_NOTES = ("Be aware that when using `ckpt_path`", "The dirpath has changed from")
NONE_STEP_WARNING = r"`training_step` returned `None`"  # Lightning's automatic optimization
LIGHTNING_TIP = "💡 Tip:"  # Lightning's advertisements (litlogger, litmodels), printed by every Trainer


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_TIP)


def quiet_known_warnings() -> None:
    """Silence, for the whole process, a torch deprecation that Lightning triggers (not the user's to fix)
    and Lightning's advertisements for its cloud products (litlogger, litmodels) printed by every Trainer."""
    warnings.filterwarnings("ignore", LEAFSPEC_DEPRECATION, FutureWarning)
    # the zoo's training_step returns None only on purpose: a linear probe's epoch, a skipped non-finite loss
    warnings.filterwarnings("ignore", NONE_STEP_WARNING)
    # zoo test/validate/predict and resumed fits restore a checkpoint into a run folder of their own, with the
    # recipe's callbacks: Lightning's notes about other callback settings and the old folder ask nothing of anyone
    for message in CKPT_PATH_NOTES:
        warnings.filterwarnings("ignore", message)
    for name in ("lightning_utilities.core.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningTips) for f in logger.filters):
            logger.addFilter(_DropLightningTips())


def ignore_eval_mode_warning() -> None:
    """Silence Lightning's "module(s) in eval mode at the start of training" (frozen layers stay in eval
    mode on purpose: the fine-tuning callback says so itself)."""
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    warnings.filterwarnings("ignore", EVAL_MODE_WARNING, PossibleUserWarning)


# --- Lightning internals --------------------------------------------------------------------------------------


def wandb_run(logger):
    """The W&B run of Lightning's ``WandbLogger`` if it has been created, else None (``logger.experiment``
    would create one)."""
    return getattr(logger, "_experiment", None)


def request_stop(trainer) -> None:
    """Ask the trainer to stop at the next step boundary, exactly as Lightning's own SIGTERM handler does: the
    loops then raise ``SIGTERMException`` after the step (and broadcast it to every DDP rank)."""
    trainer._signal_connector.received_sigterm = True


def validate_in_fit(trainer) -> bool:
    """Run the fit's validation loop now, as Lightning does after an epoch's last training batch, if this epoch
    is one Lightning validates (``check_val_every_n_epoch``, validation enabled); False when it did not validate
    (not such an epoch, or no validation data)."""
    if not trainer.fit_loop.epoch_loop._should_check_val_epoch():
        return False
    connector = trainer._logger_connector
    first_loop_iter = connector._first_loop_iter
    trainer.validating = True
    trainer.lightning_module.on_validation_model_zero_grad()
    val_loop = trainer.fit_loop.epoch_loop.val_loop
    val_loop.restarting = False  # the whole validation, from its first batch (not from a saved position)
    val_loop.run()
    trainer.training = True
    connector._first_loop_iter = first_loop_iter
    return not val_loop.skip


def rewrap_ddp(trainer) -> None:
    """Wrap the model in a new DDP after a change of trainable parameters (fine-tuning unfreezing a stage).

    DDP registers, when it wraps, the parameters that require grad, and would never synchronise the others'
    gradients (torch's advice: wrap again). The old wrapper's autograd hooks must not fire any more, and torch
    has no public way to remove them."""
    from torch.nn.parallel import DistributedDataParallel

    strategy = trainer.strategy
    old = strategy.model
    if not isinstance(old, DistributedDataParallel) or not hasattr(strategy, "configure_ddp"):
        return
    old._remove_autograd_hooks()
    strategy.model = strategy.lightning_module
    strategy.configure_ddp()


@contextlib.contextmanager
def hub_offline():
    """huggingface_hub's offline mode (``HF_HUB_OFFLINE=1``) for one block: weights already in the local cache
    load, nothing is fetched, and a missing file fails at once instead of after a minute of retries."""
    import huggingface_hub.constants as hub

    saved, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved
