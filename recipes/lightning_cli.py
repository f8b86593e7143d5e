"""The zoo's LightningCLI: ``zoo fit|validate|test|predict``, and building a recipe without running it.

``zoo fit --recipe NAME`` → :func:`expand_recipe` (``--config recipes/configs/NAME.yaml``) → :class:`ZooCLI`
builds the data module, ``ImageClassifier``, callbacks and logger → ``Trainer.fit`` (then ``Trainer.test`` on
the best checkpoint). The zoo's other commands that need a recipe's objects (``zoo schedule``, ``zoo ensemble``,
``zoo export``) call :func:`build_recipe`; ``recipes/cli.py`` only dispatches and reports errors.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from importlib import import_module
from pathlib import Path
from typing import Literal

import yaml
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from callbacks.best_checkpoint import BestCheckpoint, guard_stopped
from callbacks.denormals import FlushDenormals, flush_denormals
from callbacks.explain import ExplainPredictions
from callbacks.finetuning import FineTuning
from callbacks.interrupt import Interrupt
from callbacks.label_check import LabelCheck
from callbacks.last_checkpoint import LastCheckpoint
from callbacks.loss_curves import LossCurveDiagnostics
from callbacks.lr_monitor import LRMonitor
from callbacks.lr_plot import LRPlot
from callbacks.predictions import PredictionWriter
from callbacks.report import ClassificationReport
from callbacks.run_config import RunConfig
from callbacks.run_phase import RunPhase
from callbacks.throughput import EpochThroughput
from callbacks.wandb_run import wandb_run_id
from recipes import run_section
from recipes.catalog import recipe_names, recipe_path
from recipes.config_edits import check_values, cpu_fallbacks, fill_class_names
from recipes.options import option_hint, shown, typed_model_keys
from recipes.rendezvous import end_process_group, stop_started_ranks
from recipes.resume import resolve_last
from recipes.scored_weights import refuse_diverged, refuse_untrained
from zoo import compat
from zoo.errors import NothingTrained, RunDiverged, ZooError
from zoo.protocols import ModelPreprocessing, SplitData
from zoo.runtime.checkpoint import check_fits, read_checkpoint
from zoo.runtime.console import print_table
from zoo.runtime.loggers import finish_wandb, run_dir
from zoo.training import tta
from zoo.training.module import ImageClassifier

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# `--logger NAME` shorthands for trainer.logger
LOGGERS = {"wandb": "zoo.runtime.loggers.WandbLogger", "csv": "lightning.pytorch.loggers.CSVLogger"}


class ZooCLI(compat.CheckpointHparams, LightningCLI):
    """LightningCLI with the zoo's sections (best/last checkpoints, a CSV of predictions, ...), what every run adds
    (``recipes/base.yaml``: read before the recipe, shown by ``--print_config``), num_classes/in_chans linked from
    the data, the model's pretrained preprocessing handed to the data, and a results table after ``fit``.

    ``only``: build the parser of that subcommand alone (each one costs ~0.2 s of signature and docstring
    reading, and a run needs one); None: all of Lightning's."""

    def __init__(self, *args, only: str | None = None, **kwargs):
        self.only = only
        self.option_parsers = []  # every parser of the options, for the "did you mean" of a mistyped one
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        """Lightning's, with a "did you mean" for an option no parser knows (``zoo_hint`` on the error)."""
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as err:
            err.zoo_hint = option_hint(err, self.option_parsers)
            raise

    def subcommands(self) -> dict[str, set[str]]:
        everything = LightningCLI.subcommands()
        return {self.only: everything[self.only]} if self.only in everything else everything

    def add_arguments_to_parser(self, parser):
        self.option_parsers.append(parser)
        # the sections' callbacks, in the trainer's order (recipes/base.yaml says where the others go)
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")  # defaults: recipes/base.yaml
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")  # last.ckpt every N steps too
        parser.link_arguments("checkpoint.dirpath", "last_checkpoint.dirpath")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(LRMonitor, "lr_monitor")  # lr and momentum of each param group
        parser.add_lightning_class_args(LossCurveDiagnostics, "diagnostics")
        parser.add_lightning_class_args(EpochThroughput, "throughput")
        parser.add_lightning_class_args(ClassificationReport, "report")
        parser.add_lightning_class_args(LRPlot, "lr_plot")
        parser.add_lightning_class_args(LabelCheck, "label_check")  # before finetune: its budget counts after
        parser.add_lightning_class_args(FineTuning, "finetune")  # strategy none (the default): left out
        parser.add_lightning_class_args(FlushDenormals, "denormals")  # --denormals.flush false: no flush
        run_section.add_arguments(parser)  # run.*: what every run adds (recipes/base.yaml)
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_channels", "model.in_chans", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, test the best checkpoint on the test split (when the data has one).",
        )
        parser.add_argument(
            "--tune",
            type=dict | None,
            default=None,
            help="`zoo tune`'s settings (trials, timeout, space, ...: docs/tuning.md); other commands ignore them.",
        )
        parser.add_argument(
            "--allow_untrained",
            type=bool,
            default=False,
            help="zoo validate, test and predict without --ckpt_path: score the network as the recipe builds it even "
            "when its head was never trained (random weights, or a pretrained backbone's new head); refused otherwise.",
        )
        parser.add_argument(
            "--tta",
            type=Literal[tta.MODES],
            default="none",
            help="zoo test and zoo predict: test-time augmentation, the softmax averaged over the mirror image "
            "(flip; refused where data.flip_invariant is false), five crops (crops), three zooms (scales) or both "
            "(flip+crops, flip+scales); docs/tta.md.",
        )
        parser.add_argument(
            "--explain",
            type=str | None,
            default=None,
            help="zoo predict: Grad-CAM heat maps of the images whose path matches this pattern ('*': every one), "
            "written to <log dir>/explain/ (docs/data.md).",
        )

    def read_ckpt_hparams(self) -> None:
        """``--ckpt_path``'s hyper-parameters into the config (what LightningCLI does itself: see
        ``zoo.compat.CheckpointHparams``). Lightning's loads the file with ``weights_only=True`` whatever ``--weights_only`` says and
        lets torch's error through; here the zoo's checkpoint reader names the file and what to do, ``last`` is
        the file it names, and the ``--model.*`` options typed on the command line win over the checkpoint's
        (each change said); a resume with another optimizer is refused (its state would not fit)."""
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path == "last":  # the file it names, so that `last` reads the same settings as its path would
            resolve_last(config, subcommand)
            ckpt_path = config.get("ckpt_path")
        if not ckpt_path or ckpt_path in ("best", "hpc", "registry"):
            return
        ckpt = read_checkpoint(ckpt_path, config.get("weights_only") is not False, mmap=True)
        hparams = compat.cli_model_hparams(ckpt)
        if not hparams:
            return
        typed = {key: config.get(key) for key in typed_model_keys(sys.argv[2:]) if key in config}
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        config = self.config[subcommand]
        for key, value in typed.items():  # what the command line gives wins over the checkpoint's
            if config.get(key) != value:
                rank_zero_info(f"--{key} {shown(value)} replaces the checkpoint's {shown(config.get(key))}")
                config[key] = value
        saved = hparams.get("optimizer")
        saved, given = (
            saved.get("name") if isinstance(saved, dict) else None,
            config.get("model.optimizer.name"),
        )
        if subcommand == "fit" and saved and given and given != saved:
            raise ZooError(
                f"--model.optimizer.name {given}: {ckpt_path} holds the state of a {saved} optimizer, which another "
                "optimizer cannot continue; to switch, start a new run from its weights: --model.pretrained_path "
                f"{ckpt_path} instead of --ckpt_path"
            )

    def before_instantiate_classes(self):
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: `zoo schedule`
        if config.get("denormals.flush"):  # before the model is built: the intra-op threads inherit the mode
            flush_denormals(True)
        if "weights_only" in config and config["weights_only"] is None:
            config["weights_only"] = True  # checkpoints hold tensors and plain types only
        checkpoint = config.get("checkpoint")
        if checkpoint is not None and not checkpoint.get("filename") and checkpoint.get("monitor"):
            checkpoint["filename"] = best_filename(checkpoint["monitor"])
        if self.subcommand:
            resolve_last(config, self.subcommand)  # --ckpt_path last: the runs' newest last.ckpt
            cpu_fallbacks(config.get("trainer"))  # e.g. sync_batchnorm off on a CPU
            check_values(config, self.subcommand)
        if self.subcommand == "fit":
            _resume_wandb_run(config)
        weights_only = config.get("weights_only") is not False
        fill_class_names(
            config.get("data"), config.get("ckpt_path"), weights_only
        )  # predict without training data
        model = config.get("model")
        if self.subcommand in ("validate", "test", "predict") and config.get("ckpt_path") and model:
            model.pretrained, model.pretrained_path = False, None  # the weights come from the checkpoint
        if self._scores_as_built(config):
            refuse_untrained(self.subcommand, model)  # random weights: said before anything is built

    def _scores_as_built(self, config) -> bool:
        """``zoo validate|test|predict`` with no checkpoint to load and no ``--allow_untrained``."""
        return (
            self.subcommand in ("validate", "test", "predict")
            and config is not None
            and not config.get("ckpt_path")
            and not config.get("allow_untrained")
        )

    def instantiate_classes(self):
        """Lightning's, then the model's pretrained preprocessing handed to the data module (``preprocess:
        auto``). A link would not do: ``link_arguments("model", "data...", apply_on="instantiate")`` closes a
        cycle with the links of num_classes and in_chans from the data to the model, which jsonargparse refuses."""
        super().instantiate_classes()
        if isinstance(self.datamodule, ModelPreprocessing) and isinstance(self.model, ImageClassifier):
            self.datamodule.set_model_config(self.model.pretrained_data_config())

    def after_instantiate_classes(self):
        super().after_instantiate_classes()
        config = self.config[self.subcommand] if self.subcommand else None
        if config is not None:  # --tta: refused here, before anything runs, when the data cannot take it
            tta.configure(config.get("tta"), self.subcommand, self.model, self.datamodule)
        if self._scores_as_built(config) and isinstance(self.model, ImageClassifier):
            refuse_untrained(
                self.subcommand, config.get("model"), self.model
            )  # a pretrained backbone's new head
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path and Path(ckpt_path).is_file():  # weights of another model: say so before anything runs
            ckpt = read_checkpoint(ckpt_path, config.get("weights_only") is not False, mmap=True)
            check_fits(
                self.model, ckpt["state_dict"], ckpt_path, (ckpt.get("hyper_parameters") or {}).get("arch")
            )
            if ckpt.get("diverged"):
                refuse_diverged(self.subcommand, ckpt_path, ckpt["diverged"])

    def instantiate_trainer(self, **kwargs):
        """Lightning's trainer with the ``run`` section's callbacks and settings, in the order ``recipes/base.yaml``
        states (``run_section.arrange``); the ``finetune`` section's callback is left out when its strategy is
        none."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config, run = config.get("trainer") or {}, config.get("run")
        recipe = trainer_config.get("callbacks") or []
        recipe = list(recipe) if isinstance(recipe, list) else [recipe]
        explain = config.get("explain") if self.subcommand == "predict" else None
        run_callbacks = run_section.chosen(
            run, recipe, explain=ExplainPredictions(explain) if explain else None
        )
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except TypeError as err:  # Lightning checks the trainer's values with TypeErrors too (devices, ...)
            raise ZooError(f"--trainer: {err}") from err
        unused = [c for c in trainer.callbacks if isinstance(c, FineTuning) and c.strategy == "none"]
        callbacks = [c for c in trainer.callbacks if c not in unused]
        trainer.callbacks = run_section.arrange(callbacks, recipe, run_callbacks, trainer.loggers)
        run_section.apply_settings(trainer, run, launching=bool(self.subcommand))
        return trainer

    def after_fit(self):
        trainer = self.trainer
        interrupt = next((c for c in trainer.callbacks if isinstance(c, Interrupt)), None)
        stop = interrupt.after_training(trainer) if interrupt is not None else None  # Ctrl+C at the very end
        results = {}
        ckpt = trainer.checkpoint_callback
        best = ckpt.best_model_path if ckpt else ""
        diverged = _divergence(trainer)
        if ckpt is not None and ckpt.best_model_score is not None:
            results[f"best {ckpt.monitor}"] = f"{float(ckpt.best_model_score):.4f}"
            if ckpt.monitor != "val/top1":  # say the best epoch's top-1 too
                top1 = getattr(ckpt, "best_metrics", {}).get("val/top1")  # as validated in that epoch
                if top1 is None and best:  # resumed before the best epoch: validate it once more
                    validated = trainer.validate(
                        self.model,
                        datamodule=self.datamodule,
                        ckpt_path=best,
                        weights_only=True,
                        verbose=False,
                    )
                    top1 = validated[0].get("val/top1") if validated else None
                if top1 is not None:
                    results["val/top1"] = f"{top1:.4f}"
        if self.config["fit"].get("test_after_fit") and best and stop is None:
            if self._has_test_data():
                tested = trainer.test(
                    self.model, datamodule=self.datamodule, ckpt_path=best, weights_only=True
                )
                for key, value in (tested[0] if tested else {}).items():
                    if key.endswith("top1"):
                        results[key] = f"{value:.4f}"
            elif isinstance(self.datamodule, SplitData):
                chose = (
                    ": the val/top1 above chose the checkpoint (optimistic)"
                    if self.datamodule.has_split("val")
                    else ""
                )
                results["test/top1"] = f"no test split{chose}"
        results["best checkpoint"] = best or "(none: no epoch had a usable score)"
        results["log dir"] = str(run_dir(trainer))
        _print_results(results)
        if diverged:
            kept = (
                f"the best checkpoint is {best}, from before it diverged"
                if best
                else "no checkpoint was kept as best"
            )
            raise RunDiverged(f"the run diverged: {diverged}; {kept}")
        if stop is not None:
            raise stop
        phase = next((c for c in trainer.callbacks if isinstance(c, RunPhase)), None)
        probed = any(isinstance(c, FineTuning) and c.probed_now for c in trainer.callbacks)
        if phase is not None and phase.train_batches == 0 and phase.epochs_ended == 0 and not probed:
            raise NothingTrained(
                f"nothing was trained: the run ended at epoch {trainer.current_epoch}, step {trainer.global_step} "
                f"(max_epochs {trainer.max_epochs}, max_steps {trainer.max_steps} reached, or no training batch); "
                "raise --trainer.max_epochs to train on from a checkpoint"
            )

    def _has_test_data(self) -> bool:
        if isinstance(self.datamodule, SplitData) and not self.datamodule.has_split("test"):
            return False
        try:
            self.datamodule.setup("test")
            return len(self.datamodule.test_dataloader()) > 0
        except (NotImplementedError, KeyError, AttributeError, TypeError):
            return False


def best_filename(monitor: str) -> str:
    """A best checkpoint's name, from what chose it: ``best-epoch007-val_loss=0.1021`` for ``val/loss``."""
    return f"best-epoch{{epoch:03d}}-{monitor.replace('/', '_')}={{{monitor}:.4f}}"


def _divergence(trainer) -> str | None:
    """Why the run counts as diverged (the non-finite guard stopped it, or the loss curve says so), or None."""
    stopped = guard_stopped(trainer.lightning_module)
    if stopped:
        return stopped
    for callback in trainer.callbacks:
        if isinstance(callback, LossCurveDiagnostics):
            for finding in callback.findings:
                if finding.kind == "diverged":
                    return finding.message
    return None


@rank_zero_only
def _print_results(results: dict[str, str]) -> None:
    print_table("Results", ("what", "value"), results.items(), header=False)


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


def check_yaml(path: str) -> None:
    """A ``--config`` file that is missing or not valid YAML is an error naming the file (and the line)."""
    file = Path(path)
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "no such file"
        raise ZooError(f"--config {path!r}: {what}; give the path of a YAML recipe (or --recipe NAME)")
    try:
        loaded = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ZooError(
            f"{path}: not valid YAML{where}: {problem}; fix the file (indentation, brackets, colons)"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ZooError(f"--config {path!r}: cannot read it ({err}); give a readable YAML file") from err
    if not isinstance(loaded, dict | None):
        raise ZooError(
            f"{path}: a recipe is a mapping of sections (trainer:, model:, data:, ...), not a {type(loaded).__name__}"
        )


def expand_recipe(argv: list[str]) -> list[str]:
    """Replace ``--recipe NAME`` by ``--config <shipped NAME.yaml>``, placed first so other options override it;
    every ``--config`` file is checked to be valid YAML first."""
    out, configs = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--recipe", "--config", "-c") or arg.startswith(("--recipe=", "--config=")):
            if "=" in arg:
                value = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                value = argv[i + 1]
                i += 1
            else:
                raise ZooError(
                    f"{arg} needs a value: a recipe name ({', '.join(recipe_names())}) or a YAML file"
                )
            if arg.startswith("--recipe"):
                configs += ["--config", str(recipe_path(value))]
            else:
                if not value.lstrip().startswith("{"):  # jsonargparse also takes inline YAML/JSON
                    check_yaml(value)
                out += ["--config", value]
        else:
            out.append(arg)
        i += 1
    return configs + out


def run_lightning(argv: list[str]) -> ZooCLI:
    """Run one of Lightning's subcommands (``argv[0]``) through the zoo's CLI."""
    command, rest = argv[0], expand_logger(expand_recipe(argv[1:]))
    given = " ".join(rest)
    if not any(flag in given for flag in ("--config", "-c ", "--data", "--help", "-h", "--print_config")):
        raise ZooError(
            f"zoo {command} needs --recipe NAME (one of {', '.join(recipe_names())}) or --config FILE"
        )
    # LightningCLI reads sys.argv; DDP launchers re-run it in each process, so it holds the expanded command
    saved, sys.argv = sys.argv, [sys.argv[0], command, *rest]
    cli = None
    try:
        cli = make_cli(save_config_callback=RunConfig, save_config_kwargs={"overwrite": True})
        return cli
    except BaseException:
        stop_started_ranks()  # a DDP run's other ranks would wait for this one until their timeout
        raise
    finally:
        sys.argv = saved
        finish_wandb(getattr(cli, "trainer", None))  # close the W&B run; offline runs print `wandb sync`
        end_process_group()  # DDP: before the interpreter's exit tears its threads down


def make_cli(
    args: list[str] | None = None, run: bool = True, cli_class: type[ZooCLI] | None = None, **kwargs
) -> ZooCLI:
    """The zoo's CLI over ``ImageClassifier`` and any data module (``args`` None: read ``sys.argv``).

    Every command's parser reads ``recipes/base.yaml`` before the recipe (what every run adds to the trainer).
    Parse errors are raised (jsonargparse's ``exit_on_error=False``), so the ``zoo`` command prints them as
    one ``error:`` line instead of a page of usage."""
    compat.quiet_known_warnings()
    quiet = {"exit_on_error": False}
    command = {**quiet, "default_config_files": [str(run_section.BASE_RECIPE)]}
    given = sys.argv[1:] if args is None else args
    only = given[0] if run and given and given[0] in LIGHTNING_COMMANDS else None  # the one parser it needs
    names = [only] if only else LIGHTNING_COMMANDS
    parser_kwargs = {**quiet, **{name: dict(command) for name in names}} if run else dict(command)
    return (cli_class or ZooCLI)(
        ImageClassifier,
        LightningDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        run=run,
        args=args,
        parser_kwargs={**parser_kwargs, **kwargs.pop("parser_kwargs", {})},
        only=only,
        **kwargs,
    )


def build_recipe(args: list[str], cli_class: type[ZooCLI] | None = None) -> ZooCLI:
    """Instantiate a recipe's trainer, model and data module from ``args`` without running anything
    (``cli_class``: a subclass of :class:`ZooCLI` that changes how)."""
    saved, sys.argv = sys.argv, sys.argv[:1]  # the options come from `args`, not the command line
    try:
        with quiet_lightning():  # no "Seed set", "GPU available: False" lines for a run that does not run
            return make_cli(args, run=False, cli_class=cli_class, save_config_callback=None)
    finally:
        sys.argv = saved


@contextlib.contextmanager
def quiet_lightning():
    """Hide Lightning's info lines (seed, accelerators, tips, the end-of-fit report's) while this runs."""
    logs = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)
