"""Every use of a library's private API, and every process-wide side effect, in one place.

Each entry says what it relies on and the versions it was checked on (the newest and the lowest that
``pyproject.toml`` allows); when a library changes, this is the one file to read, and ``tests/test_compat.py``
fails on the name that moved. Outside this file the zoo uses no private name of a library: ``tests/
test_private_names.py`` reads the source of ``zoo/``, ``callbacks/`` and ``recipes/`` for them. Importing this
module imports nothing heavy (no torch, no Lightning): the fast commands use it.

| what | relies on | checked on |
|---|---|---|
| :func:`hide_wandb_while_timm_imports` | ``timm.utils.summary`` trying ``import wandb`` at import time | timm 1.0.27, 1.0.31; wandb 0.31 |
| :func:`quiet_known_warnings` | the text of a torch deprecation raised inside Lightning, of Lightning's "💡 Tip:" lines, and of its warning when ``training_step`` returns None | torch 2.14.1; lightning 2.6.1, 2.6.6 |
| :func:`ignore_eval_mode_warning` | the text of Lightning's "module(s) in eval mode" warning | lightning 2.6.1, 2.6.6 |
| :func:`wandb_run`, :func:`wandb_init_settings` | ``WandbLogger._experiment`` (the run, or None before it is created) and ``WandbLogger._wandb_init`` (the settings ``wandb.init`` will get) | lightning 2.6.1, 2.6.6 |
| :func:`request_stop` | ``Trainer._signal_connector.received_sigterm`` (what ``trainer.received_sigterm`` reads) | lightning 2.6.1, 2.6.6 |
| :func:`validate_in_fit` | what ``_TrainingEpochLoop.on_advance_end`` does to run the validation loop inside ``fit`` (``_should_check_val_epoch()``, ``trainer.validating``, the logger connector's ``_first_loop_iter``, ``fit_loop.epoch_loop.val_loop``: ``restarting``, ``run()``, ``skip``) | lightning 2.6.1, 2.6.6 |
| :func:`skip_empty_hooks` | ``lightning.pytorch.trainer.call._call_callback_hooks`` passing over a hook that is not ``callable`` (``if callable(fn):``) | lightning 2.6.1, 2.6.6 |
| :class:`CheckpointSaves` | ``ModelCheckpoint._should_skip_saving_checkpoint``, ``_should_save_on_train_epoch_end``, ``_save_last_checkpoint``, ``_monitor_candidates`` | lightning 2.6.1, 2.6.6 |
| :class:`CheckpointHparams` | ``LightningCLI._parse_ckpt_path``, the hook ``LightningCLI.__init__`` calls between parsing and ``before_instantiate_classes``, and the ``_instantiator`` / ``_class_path`` keys ``save_hyperparameters`` writes under the CLI | lightning 2.6.1, 2.6.6 |
| :func:`state_key` | ``Callback._generate_state_key`` (the key format Lightning's own callbacks use; its callback guide recommends it) | lightning 2.6.1, 2.6.6 |
| :func:`ema_latest_update_epoch`, :func:`set_ema_latest_update_epoch` | ``WeightAveraging._latest_update_epoch`` (the last epoch averaged at its end; Lightning does not save it) | lightning 2.6.1, 2.6.6 |
| :func:`rewrap_ddp` | ``DistributedDataParallel._remove_autograd_hooks`` and Lightning's ``DDPStrategy.configure_ddp`` | torch 2.14.1; lightning 2.6.1, 2.6.6 |
| :func:`batch_norm_base`, :func:`norm_base`, :func:`dropout_base` | torch's base classes of its layers: ``nn.modules.batchnorm._BatchNorm`` (every BatchNorm, the lazy and synchronised ones too), ``_NormBase`` (BatchNorm and InstanceNorm), ``nn.modules.dropout._DropoutNd`` | torch 2.14.1 |
| :func:`sampler_position_key`, :func:`loader_state_workers` | torchdata's ``StatefulDistributedSampler._YIELDED`` and the ``_snapshot`` / ``_main_snapshot`` / ``_num_workers`` keys of a ``StatefulDataLoader`` state | torchdata 0.10.0, 0.11.0 |
| :func:`remote_filesystem` | litdata's ``streaming.fs_provider._get_fs_provider`` (its client for ``s3://`` and ``gs://``) | litdata 0.2.74, 0.2.76 |
| :func:`hub_offline` | ``huggingface_hub.constants.HF_HUB_OFFLINE``, read by ``is_offline_mode()`` at each call | huggingface_hub 2.4.0 |
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


def wandb_init_settings(logger) -> dict:
    """The keyword arguments Lightning's ``WandbLogger`` will pass to ``wandb.init`` (the dict itself: a change
    to it changes the run to be created)."""
    return logger._wandb_init


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


def state_key(callback, **settings) -> str:
    """A callback's ``state_key`` in the format of Lightning's own callbacks: the class's qualified name and the
    settings that tell two instances apart (``ModelCheckpoint{'monitor': ...}``)."""
    return callback._generate_state_key(**settings)


def ema_latest_update_epoch(callback) -> int:
    """The last epoch whose end Lightning's ``WeightAveraging`` averaged at (-1: none), which it does not save."""
    return callback._latest_update_epoch


def set_ema_latest_update_epoch(callback, epoch: int) -> None:
    callback._latest_update_epoch = epoch


# the hooks Lightning calls at every batch (training step: the first six)
BATCH_HOOKS = (
    "on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
    "on_before_zero_grad", "on_train_batch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
)  # fmt: skip


def skip_empty_hooks(callbacks) -> int:
    """For every per-batch hook a callback leaves as ``Callback``'s empty method, an instance attribute ``None``;
    returns how many hooks that takes out of each training step.

    Lightning calls every hook of a step on every callback (the profiler's action name, built from the
    callback's ``state_key``, and context, then the call), ~2 µs each, whether the method does anything or not;
    it passes over an attribute that is not callable. The run does the same with or without them."""
    from lightning.pytorch.callbacks import Callback

    skipped = 0
    for callback in callbacks:
        for name in BATCH_HOOKS:
            if getattr(type(callback), name, None) is getattr(Callback, name):
                setattr(callback, name, None)
                skipped += name in BATCH_HOOKS[:6]
    return skipped


class CheckpointSaves:
    """The steps of ``ModelCheckpoint``'s saving that Lightning keeps private, under public names: a mixin that
    goes before ``ModelCheckpoint`` in the bases of the zoo's checkpoint callbacks."""

    def saves_at_train_epoch_end(self, trainer) -> bool:
        """Whether this callback saves at the end of the training epoch (no validation to wait for), not at the
        end of the validation."""
        return self._should_save_on_train_epoch_end(trainer)

    def save_last_now(self, trainer) -> None:
        """Write ``last.ckpt`` for this step, unless Lightning would save nothing here: not fitting, a sanity
        check or ``fast_dev_run``, or this callback wrote a checkpoint at this step already."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class CheckpointHparams:
    """For a ``LightningCLI``: its private ``_parse_ckpt_path`` (called by ``LightningCLI.__init__`` between
    parsing and ``before_instantiate_classes``; it reads ``--ckpt_path``'s hyper-parameters into the config,
    loading the file with ``torch.load(weights_only=True)`` whatever the command line says) replaced by the
    subclass's public :meth:`read_ckpt_hparams`."""

    def _parse_ckpt_path(self) -> None:
        self.read_ckpt_hparams()

    def read_ckpt_hparams(self) -> None:
        """Override: put the hyper-parameters of the checkpoint given by ``--ckpt_path`` into ``self.config``."""


def cli_model_hparams(checkpoint: dict) -> dict:
    """The model's arguments as the CLI saved them in ``checkpoint["hyper_parameters"]``, in the form the CLI's
    parser reads: without the ``_instantiator`` key, and a ``_class_path`` (a subclass of the CLI's model class)
    as ``class_path`` with ``dict_kwargs`` (what ``LightningCLI._parse_ckpt_path`` does)."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    if "_class_path" in hparams:
        hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
    return hparams


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


# --- torch, torchdata, litdata -----------------------------------------------------------------------------------


def batch_norm_base() -> type:
    """The class every torch BatchNorm derives from (1d, 2d, 3d, lazy, synchronised) and only they."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return _BatchNorm


def norm_base() -> type:
    """The class of torch's norm layers that can keep running statistics: BatchNorm and InstanceNorm."""
    from torch.nn.modules.batchnorm import _NormBase

    return _NormBase


def dropout_base() -> type:
    """The class every torch dropout layer derives from (``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``, ...)."""
    from torch.nn.modules.dropout import _DropoutNd

    return _DropoutNd


def sampler_position_key() -> str:
    """The key under which torchdata's ``StatefulDistributedSampler`` saves how many samples it has yielded."""
    from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

    return StatefulDistributedSampler._YIELDED


def loader_state_workers(state: dict) -> int:
    """The ``num_workers`` of the ``StatefulDataLoader`` whose ``state_dict()`` is ``state`` (0 when it says none)."""
    return state.get("_snapshot", {}).get("_main_snapshot", {}).get("_num_workers", 0)


def remote_filesystem(path: str, storage_options: dict | None):
    """litdata's client for an ``s3://`` or ``gs://`` path, with the user's credentials as its
    ``StreamingDataset`` uses them."""
    from litdata.streaming.fs_provider import _get_fs_provider

    return _get_fs_provider(path, storage_options)


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
