"""One trial of a search: the recipe with the trial's values, run as ``zoo fit`` in this process into its own
folder, its validation metric reported to Optuna after every epoch (and pruned there), and its score."""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from zoo.errors import ZooError
from zoo.tools.search_space import put

LOGGER_DIRS = ("CSVLogger", "TensorBoardLogger")  # loggers whose folder is save_dir/name/version


class TrialReport(Callback):
    """Report the validation ``metric`` of every epoch to an Optuna trial; stop the fit when the pruner says the
    trial is hopeless (its score then is the best it reached). Also keeps every epoch's validation metrics.

    Written here rather than taken from ``optuna-integration``'s Lightning callback (a package of its own, not a
    dependency of the zoo); it stops the run the way Lightning stops one (``should_stop``), so the trial's files
    and checkpoints are closed as after any fit."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.epochs: dict[int, dict[str, float]] = {}
        self.pruned_at: int | None = None
        self.trainer = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.trainer = trainer

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and v.numel() == 1
        }
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        epoch = trainer.current_epoch
        self.epochs[epoch] = metrics
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True


def trial_config(base: dict, values: dict, epochs: int | None) -> dict:
    """The recipe with a trial's values (and its stage's length): what ``zoo fit --config`` runs."""
    config = copy.deepcopy(base)
    for key, value in values.items():
        put(config, key, value)
    if epochs is not None:
        config.setdefault("trainer", {})["max_epochs"] = int(epochs)
    return config


def into_folder(config: dict, folder: Path, group: str) -> dict:
    """``config`` writing into ``folder`` (logs, checkpoints), on one device, quiet (no bar, no summary), never
    testing."""
    config = copy.deepcopy(config)
    trainer = config.setdefault("trainer", {})
    trainer.update(default_root_dir=str(folder), enable_progress_bar=False, enable_model_summary=False)
    trainer.update(devices=1, num_nodes=1)  # a trial per device: several workers share a machine's devices
    if isinstance(trainer.get("strategy"), str) and trainer["strategy"].startswith("ddp"):
        trainer["strategy"] = "auto"
    config["test_after_fit"] = False  # every score is a validation score: the test split is never loaded
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if not isinstance(logger, dict):
            continue
        args = logger.setdefault("init_args", {}) if logger.get("init_args") is not None else {}
        logger["init_args"] = args
        if str(logger.get("class_path", "")).rsplit(".", 1)[-1] in LOGGER_DIRS:
            args.update(save_dir=str(folder.parent), name="", version=folder.name)
        else:  # W&B: one run per trial, grouped by search
            args.update(save_dir=str(folder), name=folder.name, group=group)
    checkpoint = config.get("checkpoint")
    if isinstance(checkpoint, dict) and checkpoint.get("dirpath"):
        checkpoint["dirpath"] = str(folder / "checkpoints")
    return config


def fit_trial(path: Path, trial, metric: str) -> TrialReport:
    """``zoo fit --config path`` in this process, its validation metric reported to ``trial``; what it prints goes
    to ``path`` with the suffix ``.log``."""
    import sys

    from callbacks.run_config import RunConfig
    from recipes.lightning_cli import ZooCLI, make_cli, quiet_lightning
    from zoo.errors import RunDiverged
    from zoo.runtime.loggers import finish_wandb

    report = TrialReport(trial, metric)

    class TrialCLI(ZooCLI):
        def instantiate_trainer(self, **kwargs):
            trainer = super().instantiate_trainer(**kwargs)
            trainer.callbacks.append(report)
            return trainer

    saved, sys.argv = sys.argv, sys.argv[:1]  # the options are in `path`, not on the command line
    with path.with_suffix(".log").open("w") as log, contextlib.redirect_stdout(log), quiet_lightning():
        try:
            make_cli(
                ["fit", "--config", str(path)],
                cli_class=TrialCLI,
                save_config_callback=RunConfig,
                save_config_kwargs={"overwrite": True},
            )
        except RunDiverged as err:  # its best epoch, from before it diverged, still scores
            print(f"diverged: {err}")
        finally:
            sys.argv = saved
            finish_wandb(report.trainer)
    return report


def score(report: TrialReport, metric: str, mode: str) -> tuple[float, int, dict]:
    """The best value of ``metric`` over the trial's epochs (what its best checkpoint holds), its epoch, and
    that epoch's validation metrics."""
    if not report.epochs:
        raise ZooError(f"the trial logged no finite {metric} (no validation split, or it diverged at once)")
    pick = min if mode == "min" else max
    epoch = pick(report.epochs, key=lambda e: report.epochs[e][metric])
    return report.epochs[epoch][metric], epoch, report.epochs[epoch]
