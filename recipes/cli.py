"""The ``zoo`` command: Lightning's fit/validate/test/predict on a recipe, plus the zoo's own commands.

``zoo fit --recipe NAME`` → ``recipes/configs/NAME.yaml`` → LightningCLI builds the data module,
``ImageClassifier``, callbacks and logger → ``Trainer.fit`` (then ``Trainer.test`` on the best checkpoint).
"""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path

from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from callbacks.exact_resume import ExactResume
from callbacks.finetuning import FineTuning
from callbacks.last_checkpoint import LastCheckpoint
from callbacks.loss_curves import LossCurveDiagnostics
from callbacks.lr_monitor import LRMonitor
from callbacks.lr_plot import LRPlot
from callbacks.predictions import PredictionWriter
from callbacks.report import ClassificationReport
from callbacks.run_config import RunConfig
from callbacks.throughput import EpochThroughput
from callbacks.wandb_run import WandbRunId, wandb_run_id
from recipes.catalog import recipe_names, recipe_path
from recipes.resume import resolve_last
from zoo.accelerate import cpu_fallbacks
from zoo.checkpoint_io import AtomicCheckpointIO
from zoo.data.base import fill_class_names
from zoo.loggers import finish_wandb, run_dir
from zoo.module import ImageClassifier

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# zoo's own commands: name -> module with main(argv) -> exit code
COMMANDS = {
    "recipes": "recipes.commands.recipes",
    "models": "recipes.commands.models",
    "summary": "recipes.commands.summary",
    "schedule": "recipes.commands.schedule",
    "ensemble": "recipes.commands.ensemble",
    "export": "recipes.commands.export",
    "check-data": "recipes.commands.check_data",
}

USAGE = f"""usage: zoo COMMAND [options]

Train and evaluate (Lightning; `zoo COMMAND --help` lists every option):
  fit        train a recipe:  zoo fit --recipe digits [--section.key value ...]
  validate   evaluate a checkpoint on the validation split:  zoo validate --recipe digits --ckpt_path PATH
  test       evaluate a checkpoint on the test split
  predict    predict with a checkpoint and write a CSV

The zoo's own commands:
  recipes    list the shipped recipes
  models     list the zoo's models (and timm models matching a pattern)
  summary    per-layer output shapes, parameters and MACs of a model
  schedule   draw a recipe's learning-rate schedule without training
  ensemble   evaluate the averaged predictions of several checkpoints

Shipped recipes: {", ".join(recipe_names())}. `--config PATH` takes a YAML of your own.
Track a run in Weights & Biases: --logger wandb [--wandb.project P --wandb.name N --wandb.group G --wandb.tags [a,b]]
(offline by itself without an API key or network; `wandb sync DIR` uploads it later)."""

# `--logger NAME` shorthands for trainer.logger
LOGGERS = {"wandb": "zoo.loggers.WandbLogger", "csv": "lightning.pytorch.loggers.CSVLogger"}


class ZooCLI(LightningCLI):
    """LightningCLI with the zoo's defaults: best/last checkpoints on ``val/top1``, a CSV of predictions,
    num_classes/in_chans linked from the data, a Rich progress bar, and a results table after ``fit``."""

    def add_arguments_to_parser(self, parser):
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/top1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:03d}-val_top1={val/top1:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.enable_version_counter": False,  # one last.ckpt, shared with last_checkpoint
            }
        )
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")  # last.ckpt every N steps too
        parser.link_arguments("checkpoint.dirpath", "last_checkpoint.dirpath")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(LRMonitor, "lr_monitor")  # lr and momentum of each param group
        parser.add_lightning_class_args(LossCurveDiagnostics, "diagnostics")
        parser.add_lightning_class_args(EpochThroughput, "throughput")
        parser.add_lightning_class_args(ClassificationReport, "report")
        parser.add_lightning_class_args(LRPlot, "lr_plot")
        parser.add_lightning_class_args(FineTuning, "finetune")  # strategy none (the default): left out
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_channels", "model.in_chans", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, test the best checkpoint on the test split (when the data has one).",
        )

    def before_instantiate_classes(self):
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: `zoo schedule`
        if "weights_only" in config and config["weights_only"] is None:
            config["weights_only"] = True  # checkpoints hold tensors and plain types only
        if self.subcommand:
            resolve_last(config, self.subcommand)  # --ckpt_path last: the runs' newest last.ckpt
            cpu_fallbacks(config.get("trainer"))  # e.g. sync_batchnorm off on a CPU
        if self.subcommand == "fit":
            _resume_wandb_run(config)
        fill_class_names(config.get("data"), config.get("ckpt_path"))  # predict without the training data
        model = config.get("model")
        if self.subcommand in ("validate", "test", "predict") and config.get("ckpt_path") and model:
            model.pretrained, model.pretrained_path = False, None  # the weights come from the checkpoint

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks = [
            c for c in trainer.callbacks if not (isinstance(c, FineTuning) and c.strategy == "none")
        ]
        wants_bar = self._get(self.config_init, "trainer").get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in trainer.callbacks):
            # swap Lightning's default TQDM bar for a Rich one
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ProgressBar)]
            bar = RichProgressBar()
            trainer.callbacks.append(bar)
        if any(isinstance(lg, LightningWandbLogger) for lg in trainer.loggers):
            trainer.callbacks.append(WandbRunId())  # the run id goes into every checkpoint
        if not any(isinstance(c, ExactResume) for c in trainer.callbacks):
            trainer.callbacks.append(ExactResume())  # generators' states: --ckpt_path resumes bit for bit
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()  # a kill during a save keeps the last file
        return trainer

    def after_fit(self):
        trainer = self.trainer
        results = {}
        ckpt = trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt else ""
        if ckpt is not None and ckpt.best_model_score is not None:
            results[f"best {ckpt.monitor}"] = f"{float(ckpt.best_model_score):.4f}"
            if ckpt.monitor != "val/top1" and best:  # say the best checkpoint's top-1 too
                validated = trainer.validate(
                    self.model, datamodule=self.datamodule, ckpt_path=best, weights_only=True, verbose=False
                )
                if validated and "val/top1" in validated[0]:
                    results["val/top1"] = f"{validated[0]['val/top1']:.4f}"
        if self.config["fit"].get("test_after_fit") and self._has_test_data():
            tested = trainer.test(
                self.model, datamodule=self.datamodule, ckpt_path=best or None, weights_only=True
            )
            for key, value in (tested[0] if tested else {}).items():
                if key.endswith("top1"):
                    results[key] = f"{value:.4f}"
        results["best checkpoint"] = best or "(none)"
        results["log dir"] = str(run_dir(trainer))
        _print_results(results)

    def _has_test_data(self) -> bool:
        try:
            self.datamodule.setup("test")
            return len(self.datamodule.test_dataloader()) > 0
        except (NotImplementedError, KeyError, AttributeError, TypeError):
            return False


@rank_zero_only
def _print_results(results: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Results", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in results.items():
        table.add_row(key, value)
    Console(width=140).print(table)


def _resume_wandb_run(config) -> None:
    """``fit --ckpt_path CKPT`` with a W&B logger and no run id: continue the run whose id CKPT holds."""
    ckpt, logger = config.get("ckpt_path"), config.get("trainer.logger")
    if not ckpt or not Path(ckpt).is_file() or not hasattr(logger, "class_path"):
        return
    module, _, name = logger.class_path.rpartition(".")
    cls = getattr(import_module(module), name, None)
    args = logger.get("init_args")
    if not (isinstance(cls, type) and issubclass(cls, LightningWandbLogger)) or args is None:
        return
    if args.get("id") or args.get("version"):
        return
    run_id = wandb_run_id(ckpt, weights_only=config.get("weights_only") is not False)
    if run_id:
        args["id"] = run_id
        rank_zero_info(f"W&B: resuming run {run_id} (from {ckpt})")


def expand_logger(argv: list[str]) -> list[str]:
    """``--logger NAME`` → ``--trainer.logger CLASS`` and ``--wandb.KEY VALUE`` → ``--trainer.logger.init_args.KEY
    VALUE`` in place (a ``--wandb.*`` option alone implies ``--logger wandb``); options apply left to right."""
    out, chosen = [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg.partition("=")
        if key == "--logger" or key.startswith("--wandb."):
            if not eq:
                if i + 1 >= len(argv):
                    raise SystemExit(f"error: {key} needs a value")
                value = argv[i + 1]
                i += 1
            if key == "--logger":
                name = value.lower()
                if name in ("none", "false"):
                    out += ["--trainer.logger", "false"]
                elif name in LOGGERS:
                    out += ["--trainer.logger", LOGGERS[name]]
                else:
                    raise SystemExit(
                        f"error: unknown --logger {value!r}; choose one of {', '.join(LOGGERS)}, none"
                    )
                chosen = name
            else:
                if chosen not in (None, "wandb"):
                    raise SystemExit(f"error: {key} needs --logger wandb, not --logger {chosen}")
                if chosen is None:
                    out += ["--trainer.logger", LOGGERS["wandb"]]
                    chosen = "wandb"
                out += [f"--trainer.logger.init_args.{key[len('--wandb.') :]}", value]
        else:
            out.append(arg)
        i += 1
    return out


def expand_recipe(argv: list[str]) -> list[str]:
    """Replace ``--recipe NAME`` by ``--config <shipped NAME.yaml>``, placed first so other options override it."""
    out, configs = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--recipe" or arg.startswith("--recipe="):
            if "=" in arg:
                name = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                name = argv[i + 1]
                i += 1
            else:
                raise SystemExit(f"error: --recipe needs a name: one of {', '.join(recipe_names())}")
            configs += ["--config", str(recipe_path(name))]
        else:
            out.append(arg)
        i += 1
    return configs + out


def run_lightning(argv: list[str]) -> ZooCLI:
    """Run one of Lightning's subcommands (``argv[0]``) through the zoo's CLI."""
    command, rest = argv[0], expand_logger(expand_recipe(argv[1:]))
    given = " ".join(rest)
    if not any(flag in given for flag in ("--config", "-c ", "--data", "--help", "-h", "--print_config")):
        raise SystemExit(
            f"error: zoo {command} needs --recipe NAME (one of {', '.join(recipe_names())}) or --config FILE"
        )
    # LightningCLI reads sys.argv; DDP launchers re-run it in each process, so it holds the expanded command
    saved, sys.argv = sys.argv, [sys.argv[0], command, *rest]
    cli = None
    try:
        cli = make_cli(save_config_callback=RunConfig, save_config_kwargs={"overwrite": True})
        return cli
    finally:
        sys.argv = saved
        finish_wandb(getattr(cli, "trainer", None))  # close the W&B run; offline runs print `wandb sync`


def make_cli(args: list[str] | None = None, run: bool = True, **kwargs) -> ZooCLI:
    """The zoo's CLI over ``ImageClassifier`` and any data module (``args`` None: read ``sys.argv``)."""
    return ZooCLI(
        ImageClassifier,
        LightningDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        run=run,
        args=args,
        **kwargs,
    )


def build_recipe(args: list[str]) -> ZooCLI:
    """Instantiate a recipe's trainer, model and data module from ``args`` without running anything."""
    saved, sys.argv = sys.argv, sys.argv[:1]  # the options come from `args`, not the command line
    try:
        return make_cli(args, run=False, save_config_callback=None)
    finally:
        sys.argv = saved


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in COMMANDS:
        return import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0
    if argv[0] in LIGHTNING_COMMANDS:
        run_lightning(argv)
        return 0
    print(f"error: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
