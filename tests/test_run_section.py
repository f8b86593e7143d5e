"""The trainer you read is the trainer that runs: ``zoo fit --recipe NAME --print_config`` shows every callback
and setting the CLI adds (``recipes/base.yaml``), and the trainer of the run has those callbacks, of those types,
in the order ``recipes/base.yaml`` states; each ``run.*`` entry switches off by its option."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
import yaml
from conftest import FAST_TRAINER
from lightning.pytorch.callbacks import ModelCheckpoint, RichModelSummary, RichProgressBar
from lightning.pytorch.profilers import SimpleProfiler

from callbacks.run_config import RunConfig
from recipes.lightning_cli import ZooCLI, expand_logger, expand_recipe, make_cli
from zoo.runtime.checkpoint_io import AtomicCheckpointIO
from zoo.runtime.profiler import NoProfiler

TINY = (
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--test_after_fit",
    "false",
)


@pytest.fixture(autouse=True)
def _torch_modes_kept():
    """The digits recipe turns on deterministic algorithms for the process: later tests get the modes back."""
    deterministic, fill = (
        torch.are_deterministic_algorithms_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = fill


def load(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def printed(zoo_cli, capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as done:
        zoo_cli("fit", *args, "--print_config")
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def sections() -> dict[str, type]:
    """The CLI's callback sections (``checkpoint``, ``predictions``, ...) in the order it declares them, and the
    class each builds."""
    parser = make_cli(expand_recipe(["--recipe", "digits"]), run=False).parser
    return {key: parser.groups[key].group_class for key in parser.callback_keys}


def expected(config: dict) -> list[type]:
    """The trainer's callbacks as recipes/base.yaml's header says they go, read from the printed config alone."""
    run, trainer = config["run"], config["trainer"]
    recipe = [load(c["class_path"]) for c in trainer.get("callbacks") or []]
    kinds = {"progress_bar": RichProgressBar, "model_summary": RichModelSummary}
    switched = {
        "progress_bar": trainer.get("enable_progress_bar") is False,
        "model_summary": trainer.get("enable_model_summary") is False,
        "wandb_run_id": "Wandb" not in str((trainer.get("logger") or {}).get("class_path")),
    }
    entries = {}
    for name, value in run.items():
        if isinstance(value, dict) and value.get("class_path") and not switched.get(name):
            cls = load(value["class_path"])
            if not any(issubclass(c, kinds.get(name, cls)) for c in recipe):
                entries[name] = cls
    first = [entries.pop("resume_optimizer")] if "resume_optimizer" in entries else []
    defaults = [entries.pop(name) for name in kinds if name in entries]
    before = [entries.pop("resume_validation")] if "resume_validation" in entries else []
    own = {
        key: cls for key, cls in sections().items() if key != "finetune" or config[key]["strategy"] != "none"
    }
    checkpoints = [cls for cls in own.values() if issubclass(cls, ModelCheckpoint)]
    others = [cls for cls in own.values() if not issubclass(cls, ModelCheckpoint)]
    return [*first, *recipe, *others, RunConfig, *defaults, *before, *checkpoints, *entries.values()]


class Started(ZooCLI):
    """The zoo's CLI, noting the trainer's callbacks as the run starts (fine-tuning appends warmups later)."""

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        self.started_with = list(trainer.callbacks)
        return trainer


def run(*args: str) -> Started:
    """``zoo fit ARGS``, as ``recipes.lightning_cli.run_lightning`` runs it."""
    argv = ["fit", *expand_logger(expand_recipe(list(args)))]
    saved, sys.argv = sys.argv, [sys.argv[0], *argv]
    try:
        return make_cli(
            cli_class=Started, save_config_callback=RunConfig, save_config_kwargs={"overwrite": True}
        )
    finally:
        sys.argv = saved


def test_print_config_shows_what_the_digits_run_adds_and_the_run_has_it_in_that_order(zoo_cli, capsys):
    config = printed(zoo_cli, capsys, "--recipe", "digits")
    assert config["run"]["exact_resume"]["class_path"] == "callbacks.exact_resume.ExactResume"
    assert config["trainer"]["profiler"]["class_path"] == "zoo.runtime.profiler.NoProfiler"
    assert config["trainer"]["plugins"][0]["class_path"] == "zoo.runtime.checkpoint_io.AtomicCheckpointIO"
    assert config["checkpoint"]["monitor"] == "val/loss"  # the recipe's, over base.yaml's val/top1
    cli = run("--recipe", "digits", *TINY)
    assert [type(c) for c in cli.started_with] == expected(config)
    trainer = cli.trainer
    assert type(trainer.profiler) is NoProfiler
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    assert torch.utils.deterministic.fill_uninitialized_memory is False  # the recipe is deterministic


def test_the_finetune_runs_callbacks_are_its_printed_config_in_order(zoo_cli, capsys, tmp_path):
    from test_finetune import make_folder

    from zoo.models.backbones import LITE0_PYPI

    root = make_folder(tmp_path / "pets")
    args = ["--recipe", "finetune", "--data.root", str(root), "--model.pretrained", "false"]
    args += ["--model.pretrained_path", LITE0_PYPI, "--data.image_size", "32", "--data.num_workers", "0"]
    args += ["--data.batch_size", "4", *TINY]
    config = printed(zoo_cli, capsys, *args)
    assert config["finetune"]["strategy"] == "auto" and config["label_check"]["check"] is True
    cli = run(*args)
    kinds = [type(c) for c in cli.started_with]
    assert kinds == expected(config)
    # the contracts of docs/architecture.md, where the order is declared
    names = [k.__name__ for k in kinds]
    assert names[0] == "ResumeOptimizer" and names.index("LabelCheck") < names.index("FineTuning")
    assert names.index("ResumeValidation") < names.index("BestCheckpoint") < names.index("LastCheckpoint")
    assert names[-1] == "ExactResume" and names.index("RunLength") < names.index("EvaluateOnce")


def test_each_run_entry_switches_off_and_a_recipes_own_kind_takes_its_place():
    def callbacks(*args: str) -> list[str]:
        from recipes.lightning_cli import build_recipe

        cli = build_recipe(expand_recipe(["--recipe", "digits", *args]))
        return [type(c).__name__ for c in cli.trainer.callbacks]

    default = callbacks()
    assert "ExactResume" in default and "ZooProgressBar" in default and "ZooModelSummary" in default
    assert "ExactResume" not in callbacks("--run.exact_resume", "null")
    assert "RichProgressBar" in callbacks("--run.progress_bar", "null")  # Lightning's own bar
    assert "ZooModelSummary" not in callbacks(*FAST_TRAINER) and "ZooProgressBar" not in callbacks(
        *FAST_TRAINER
    )
    own = ["--trainer.callbacks+=callbacks.exact_resume.ExactResume"]
    assert callbacks(*own).count("ExactResume") == 1


def test_a_profiler_or_checkpoint_io_asked_for_replaces_the_base_ones():
    from recipes.lightning_cli import build_recipe

    cli = build_recipe(expand_recipe(["--recipe", "digits", "--trainer.profiler", "simple"]))
    assert type(cli.trainer.profiler) is SimpleProfiler
    cli = build_recipe(expand_recipe(["--recipe", "digits", "--trainer.plugins", "null"]))
    assert type(cli.trainer.strategy.checkpoint_io) is not AtomicCheckpointIO


def test_the_docs_name_every_entry_of_the_run_section():
    from pathlib import Path

    from recipes.run_section import BASE_RECIPE

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    run = yaml.safe_load(BASE_RECIPE.read_text())["run"]
    missing = [name for name in run if f"run.{name}" not in text]
    assert not missing, f"docs/cli.md does not describe {missing}"
