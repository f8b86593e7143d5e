"""Edits the ``zoo`` CLI makes to a parsed config before anything is built (jsonargparse namespaces), and the
checks of values that would otherwise fail only once training has started.

Each edit is said in a warning or info line; each check raises a :class:`~zoo.errors.ZooError` naming the key,
the value and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from zoo.errors import ZooError, ensure_writable
from zoo.runtime.accelerate import runs_on_cpu
from zoo.runtime.checkpoint import read_checkpoint


def _get(node, key: str, default=None):
    try:
        value = node.get(key, default) if node is not None else default
    except (AttributeError, KeyError, TypeError):
        return default
    return default if value is None else value


def fill_class_names(data, ckpt_path: str | None, weights_only: bool = True) -> None:
    """Set an unset ``class_names`` option of the data config ``data`` to the classes saved in the checkpoint,
    so ``zoo predict --ckpt_path CKPT --data.predict_dir DIR`` needs no training data."""
    init = getattr(data, "init_args", None) if data is not None else None
    if not ckpt_path or init is None or "class_names" not in init or init.class_names is not None:
        return
    if not os.path.isfile(ckpt_path):
        return  # the checkpoint check names the missing file
    saved = read_checkpoint(ckpt_path, weights_only, mmap=True).get("datamodule_hyper_parameters")
    if saved and saved.get("class_names"):
        init.class_names = list(saved["class_names"])


def cpu_fallbacks(trainer) -> list[str]:
    """Turn off, in a ``trainer`` config about to run on the CPU, the GPU options that cannot run there.

    torch's ``SyncBatchNorm`` raises on CPU tensors, so ``sync_batchnorm`` becomes false (each process then
    normalises its own batch). bf16-mixed, channels-last and compile do run on a CPU and are left as set.
    Returns the changes made, each also given as a warning.
    """
    if not trainer or not runs_on_cpu(trainer.get("accelerator")):
        return []
    changes = []
    if trainer.get("sync_batchnorm"):
        trainer["sync_batchnorm"] = False
        changes.append(
            "trainer.sync_batchnorm: true → false: torch's SyncBatchNorm runs on GPUs only, and this run is on "
            "the CPU (each process normalises its own batch)"
        )
    for change in changes:
        rank_zero_warn(change)
    return changes


def output_folders(config) -> dict[str, str]:
    """``{option: folder}`` of every folder a run writes to: the trainer's root, the loggers' and the
    checkpoints' folders."""
    trainer = _get(config, "trainer")
    folders = {"trainer.default_root_dir": _get(trainer, "default_root_dir", ".")}
    loggers = _get(trainer, "logger")
    for i, logger in enumerate(loggers if isinstance(loggers, list) else [loggers]):
        save_dir = _get(_get(logger, "init_args"), "save_dir")
        if save_dir:
            where = "trainer.logger" if not isinstance(loggers, list) else f"trainer.logger[{i}]"
            folders[f"{where}.init_args.save_dir"] = save_dir
    for section in ("checkpoint", "last_checkpoint"):
        dirpath = _get(_get(config, section), "dirpath")
        if dirpath:
            folders[f"{section}.dirpath"] = dirpath
    return folders


def check_writable(option: str, folder: str | os.PathLike) -> None:
    """``folder`` is, or can be created as, a folder this process may write to; else one error naming ``option``
    (a file in the way: exit 2; the machine refusing the write: exit 5, :func:`zoo.errors.ensure_writable`)."""
    path = Path(folder).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is a file" if probe == path else f"is below the file {str(probe)!r}"
        raise ZooError(
            f"--{option} {str(path)!r} {what}, not a folder; give a folder (it is created if missing)"
        )
    hint = (
        "run from a folder you can write to, or point --trainer.default_root_dir and the logger's save_dir "
        "(--trainer.logger.init_args.save_dir) there"
    )
    ensure_writable(path, f"--{option}", hint)


def check_values(config, subcommand: str) -> None:
    """Values that Lightning or torch would reject only after set-up, or never: checked before anything runs."""
    for option, folder in output_folders(config).items():
        check_writable(option, folder)
    trainer = _get(config, "trainer")
    if subcommand == "fit":
        max_epochs, max_steps = _get(trainer, "max_epochs"), _get(trainer, "max_steps", -1)
        limit = _get(trainer, "limit_train_batches")
        if max_epochs == 0 or max_steps == 0 or limit in (0, 0.0):
            key = (
                "max_epochs" if max_epochs == 0 else "max_steps" if max_steps == 0 else "limit_train_batches"
            )
            raise ZooError(
                f"--trainer.{key} 0: this run would train nothing; give at least 1 (to evaluate a checkpoint "
                "without training, use `zoo validate` or `zoo test` with --ckpt_path)"
            )
    batch = _get(_get(_get(config, "data"), "init_args"), "batch_size")
    if isinstance(batch, int) and batch < 0:
        raise ZooError(f"--data.batch_size {batch}: give the number of images per device and step (≥ 1)")
