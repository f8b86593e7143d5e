"""Weights & Biases logging that works anywhere: online with credentials, offline by itself without them.

``WandbLogger`` is Lightning's (one W&B run per training, created on global rank 0 only), with the run's
``group``/``tags``/``notes``/``entity`` as plain arguments and a mode chosen before ``wandb.init``:

- ``WANDB_MODE=disabled`` → nothing is written; ``WANDB_MODE=offline`` (or ``offline=True``) → offline;
- no API key (``WANDB_API_KEY``, ``wandb login``'s ``~/.netrc`` entry) → offline, and the run says so;
- a key but the W&B server cannot be reached → offline (``wandb.init`` would otherwise wait, then fail).

An offline run is a directory that ``wandb sync DIR`` uploads later; :meth:`WandbLogger.finish` prints
that command. Nothing here imports ``wandb`` until a run is created.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only, rank_zero_warn

from zoo.compat import wandb_init_settings, wandb_run
from zoo.models.network import reachable

DEFAULT_HOST = "https://api.wandb.ai"
MODES = ("online", "offline", "disabled")


def _has_api_key(host: str) -> bool:
    """True when wandb would find credentials for ``host`` (env, ``~/.netrc`` or its settings file)."""
    try:
        from wandb.sdk.lib.wbauth.authenticate import authenticate_session

        return authenticate_session(host=host, source="zoo", prompt=False, update_session=False) is not None
    except ImportError:  # another wandb release: fall back to the two documented places
        import netrc

        if os.environ.get("WANDB_API_KEY"):
            return True
        try:
            return netrc.netrc().authenticators(urlsplit(host).hostname or "") is not None
        except (OSError, netrc.NetrcParseError):
            return False
    except Exception:  # a malformed key counts as none: the run goes offline and says why
        return False


def wandb_mode(offline: bool | None = None) -> tuple[str, str]:
    """The mode a run will use (``online``/``offline``/``disabled``) and why, from the env and credentials.

    ``offline=True`` forces offline, ``False`` forces online; ``None`` decides: ``WANDB_MODE`` first, then
    an API key, then whether the server answers.
    """
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env == "disabled":
        return "disabled", "WANDB_MODE=disabled"
    if offline:
        return "offline", "offline=True"
    if env in ("offline", "dryrun"):
        return "offline", f"WANDB_MODE={env}"
    if offline is False or env in ("online", "run"):
        return "online", "asked for online"
    host = os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)
    if not _has_api_key(host):
        return "offline", f"no W&B API key for {host} (set WANDB_API_KEY or run `wandb login`)"
    if not reachable(host):
        return "offline", f"cannot reach {host}"
    return "online", f"API key found and {host} reachable"


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with an automatic offline fallback and the run's metadata as arguments.

    Args:
        project: W&B project (default: ``$WANDB_PROJECT`` or ``lightning-zoo``).
        name: display name of the run (default: W&B picks one).
        group: runs trained together (e.g. a sweep or the members of an ensemble).
        tags: labels to filter runs by.
        notes: a longer description of the run.
        entity: user or team that owns the project.
        job_type: kind of run (``train``, ``eval``...).
        save_dir: where the local run directory goes (``<save_dir>/wandb/...``).
        id: run id; the same id continues the same W&B run (set from the checkpoint on resume).
        offline: ``None`` decides (see :func:`wandb_mode`), ``True``/``False`` forces.
        log_model: upload checkpoints as artifacts when online: ``True`` best and last at the end,
            ``"all"`` every checkpoint when written, ``False`` none. Ignored offline.
        checkpoint_name: artifact name of the checkpoints (default ``model-<run id>``).
        prefix: prefix of every metric name.
        init_kwargs: any other ``wandb.init`` argument, e.g. ``{resume: must}`` (``**kwargs`` also work).
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        entity: str | None = None,
        job_type: str | None = None,
        save_dir: str = ".",
        id: str | None = None,
        offline: bool | None = None,
        log_model: Literal["all"] | bool = True,
        checkpoint_name: str | None = None,
        prefix: str = "",
        init_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        if rank_zero_only.rank == 0:
            self.mode, self.mode_reason = wandb_mode(offline)
        else:  # other ranks never create a run: no probing
            self.mode, self.mode_reason = "disabled", "not global rank 0"
        if self.mode == "offline" and offline is None and not self.mode_reason.startswith("WANDB_MODE"):
            rank_zero_warn(
                f"W&B: logging offline because {self.mode_reason}. The run stays on disk; "
                "upload it later with the `wandb sync` command printed at the end."
            )
        extra = {k: v for k, v in {**(init_kwargs or {}), **kwargs}.items() if v is not None}
        extra.pop("mode", None)  # decided above: use `offline` or WANDB_MODE
        extra.update({k: v for k, v in dict(group=group, tags=tags, notes=notes, entity=entity).items() if v})
        if job_type:
            extra["job_type"] = job_type
        if self.mode != "online":
            log_model = False  # artifacts cannot be uploaded offline
        super().__init__(
            name=name,
            save_dir=save_dir,
            id=id,
            project=project or os.environ.get("WANDB_PROJECT", "lightning-zoo"),
            log_model=log_model,
            checkpoint_name=checkpoint_name,
            prefix=prefix,
            mode=self.mode,
            **extra,
        )
        settings = wandb_init_settings(self)
        if settings.get("anonymous") is None:
            settings.pop("anonymous", None)  # wandb warns about the unused setting

    @property
    def run_path(self) -> str | None:
        """Where the run is: its URL when online, its local directory when offline, ``None`` if disabled."""
        run = wandb_run(self)
        if run is None or self.mode == "disabled":
            return None
        return run.url if self.mode == "online" else str(run.settings.sync_dir)

    @rank_zero_only
    def finish(self) -> None:
        """Close the W&B run (rank 0) and say where it is; offline runs get their ``wandb sync`` command."""
        run = wandb_run(self)
        if run is None:
            return
        where = self.run_path
        run.finish()
        if self.mode == "offline":
            rank_zero_info(f"W&B run saved offline in {where}. Upload it with:\n    wandb sync {where}")
        elif where:
            rank_zero_info(f"W&B run: {where}")


def run_dir(trainer) -> Path:
    """This run's own directory: the logger's ``log_dir``, or ``<save_dir>/<project>/<run id>`` for W&B
    (where Lightning puts its checkpoints). Reads no collective, so it is safe on rank 0 alone."""
    logger = trainer.loggers[0] if trainer.loggers else None
    if isinstance(logger, (CSVLogger, TensorBoardLogger)):
        return Path(logger.log_dir)
    if isinstance(logger, _LightningWandbLogger):
        return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / str(logger.version)
    if logger is not None and logger.log_dir:
        return Path(logger.log_dir)
    return Path(trainer.default_root_dir)


def finish_wandb(trainer) -> None:
    """Close every W&B run of ``trainer`` (the ``zoo`` CLI calls this when a command is done)."""
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, WandbLogger):
            logger.finish()
        elif isinstance(logger, _LightningWandbLogger) and wandb_run(logger) is not None:
            wandb_run(logger).finish()


SETUP_FILES = {
    "config.yaml",
    "hparams.yaml",
    "command.txt",
}  # what a run writes into its folder before it trains


def remove_unused_run_dir(trainer) -> None:
    """Delete the ``version_N`` folder of the trainer's CSV or TensorBoard logger when it holds nothing but the
    files written at set-up (a run that failed before its first step): it records no run."""
    loggers = [lg for lg in trainer.loggers if isinstance(lg, (CSVLogger, TensorBoardLogger))]
    folder = Path(loggers[0].log_dir) if loggers else None
    if folder is None or not folder.name.startswith("version_") or not folder.is_dir():
        return
    files = [p for p in folder.rglob("*") if not p.is_dir()]
    if all(p.name in SETUP_FILES for p in files):
        shutil.rmtree(folder, ignore_errors=True)
