"""``zoo tune``: the search space, the settings, and real searches on digits (validation only, resumable, pruned,
shared by two workers), whose best configuration ``zoo fit --config`` reproduces."""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import FAST_TRAINER
from PIL import Image

from recipes.catalog import recipe_path
from recipes.tuning import TuneSettings
from zoo.data import DigitsDataModule
from zoo.errors import ZooError
from zoo.tools.search_space import Param, default_space, get, parse_param, put

ZOO = str(Path(sys.executable).with_name("zoo"))
# tiny trials: 4 batches an epoch, a coarse trial 1 epoch, a fine one 2
TINY = (
    "--trainer.limit_train_batches",
    "4",
    "--trainer.log_every_n_steps",
    "1",
    "--coarse_epochs",
    "1",
    "--fine_epochs",
    "2",
    *FAST_TRAINER,
)


class NoTestDigits(DigitsDataModule):
    """Digits whose test split cannot be loaded: a search that asked for it would fail."""

    asked: list = []

    def setup(self, stage=None):
        NoTestDigits.asked.append(stage)
        if stage in ("test", "predict"):
            raise AssertionError(f"setup({stage!r}): the test split was asked for")
        super().setup(stage)

    def test_dataloader(self):
        raise AssertionError("test_dataloader: the test split was asked for")


def studies(storage: Path) -> dict:
    import optuna

    url = f"sqlite:///{storage}"
    return {s: optuna.load_study(study_name=f"digits.{s}", storage=url) for s in ("coarse", "fine")}


# --- the search space -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    ["1e-3:1:log", ["1e-3", 1, "log"], {"low": 1e-3, "high": 1, "log": True}],
)
def test_a_range_is_written_three_ways(spec):
    assert parse_param("model.optimizer.lr", spec) == Param("model.optimizer.lr", 1e-3, 1.0, log=True)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("1:0.1", "need LOW < HIGH"),
        ("0:1:log", "log range needs LOW > 0"),
        ("0:1:cube", "only :log and :int"),
    ],
)
def test_a_bad_range_names_the_key(spec, message):
    with pytest.raises(ZooError, match=re.escape(message)) as err:
        parse_param("model.drop_rate", spec)
    assert "model.drop_rate" in str(err.value)


def test_fine_range_is_a_quarter_of_the_coarse_one_around_the_best():
    lr = Param("lr", 1e-3, 1e-1, log=True)  # two decades: ± half a decade
    assert (lr.narrowed(1e-2).low, lr.narrowed(1e-2).high) == pytest.approx((10**-2.5, 10**-1.5))
    assert (lr.narrowed(2e-3).low, lr.narrowed(2e-3).high) == pytest.approx((1e-3, 2e-3 * 10**0.5))
    drop = Param("drop", 0.0, 0.5)
    assert (drop.narrowed(0.45).low, drop.narrowed(0.45).high) == pytest.approx((0.325, 0.5))
    depth = Param("depth", 2, 10, integer=True)  # ± 2, kept inside 2..10
    assert (depth.narrowed(3).low, depth.narrowed(3).high) == (2, 5)


def test_keys_reach_init_args_and_callbacks_by_class_name():
    config = {
        "model": {"optimizer": {"lr": 0.1}},
        "data": {"class_path": "zoo.data.DigitsDataModule", "init_args": {"batch_size": 64}},
        "trainer": {"callbacks": [{"class_path": "callbacks.CosineDecay", "init_args": {"T": None}}]},
    }
    put(config, "data.batch_size", 32)
    assert config["data"]["init_args"]["batch_size"] == 32 and get(config, "data.batch_size") == 32
    put(config, "trainer.callbacks.LinearWarmup.warmup", 1.5)  # a warmup the recipe lacks joins its callbacks
    assert config["trainer"]["callbacks"][-1] == {
        "class_path": "callbacks.LinearWarmup",
        "init_args": {"warmup": 1.5},
    }
    put(config, "trainer.callbacks.CosineDecay.T", 10)
    assert config["trainer"]["callbacks"][0]["init_args"]["T"] == 10
    with pytest.raises(ZooError, match="'optimzer' is not an option"):
        put(config, "model.optimzer.lr", 0.1)
    with pytest.raises(ZooError, match="no StepDecay"):
        get(config, "trainer.callbacks.StepDecay.step_size")


def test_default_space_is_around_the_recipes_values():
    from recipes.command_args import RecipeArgs
    from recipes.commands.tune import recipe_config

    digits = default_space(
        recipe_config(RecipeArgs(["--config", str(recipe_path("digits"))], "digits")), run_epochs=8
    )
    assert [p.key for p in digits] == [
        "model.optimizer.lr",
        "model.optimizer.weight_decay",
        "model.drop_rate",
        "trainer.callbacks.LinearWarmup.warmup",
    ]
    assert [p.log for p in digits] == [True, True, False, False]
    bounds = [b for p in digits for b in (p.low, p.high)]
    assert bounds == pytest.approx(
        [0.01, 1.0, 5e-5, 5e-3, 0.0, 0.5, 0.0, 2.0]
    )  # lr 0.1 and decay 5e-4, ×/÷ 10
    finetune = recipe_config(
        RecipeArgs(["--config", str(recipe_path("finetune")), "--data.root", "photos"], "finetune")
    )
    keys = [p.key for p in default_space(finetune, run_epochs=4)]
    assert keys[0] == "model.optimizer.lr" and keys[-1] == "finetune.warmup"  # the joining groups' warmup


def test_settings_from_a_recipe_section():
    settings = TuneSettings.from_section({"trials": 12, "timeout": 60, "space": {"model.drop_rate": "0:0.3"}})
    assert (settings.trials, settings.timeout, settings.space) == (12, 60, {"model.drop_rate": "0:0.3"})
    with pytest.raises(ZooError, match="tune.trails: not a setting"):
        TuneSettings.from_section({"trails": 3})
    with pytest.raises(ZooError, match="--fine_trials 5"):
        TuneSettings(trials=4, fine_trials=5).check()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "model.optimizer.lr=1:0.1"], "need LOW < HIGH"),
        (["--space", "model.optimiser.lr=0.01:1:log"], "'optimiser' is not an option of the recipe"),
        (["--metric", "train/loss"], "scored on the validation split"),
        (["--trials", "0"], "--trials 0"),
        (["--timeout", "soon"], "expected seconds"),
    ],
)
def test_mistakes_are_one_error_line(zoo_cli, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        zoo_cli("tune", "--recipe", "digits", *args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --- real searches ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """``zoo tune --recipe digits --trials 4`` on a digits module that refuses its test split."""
    from recipes.cli import main

    out = tmp_path_factory.mktemp("tune") / "digits"
    NoTestDigits.asked.clear()
    cwd = os.getcwd()
    os.chdir(out.parent)
    try:
        args = ["tune", "--recipe", "digits", "--trials", "4", "--output", str(out), "--seed", "0"]
        args += ["--data.class_path", "test_tune.NoTestDigits", "--data.batch_size", "32", *TINY]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(args) == 0
    finally:
        os.chdir(cwd)
    return out, printed.getvalue(), list(NoTestDigits.asked)


@pytest.mark.slow
def test_search_ranks_draws_and_writes_the_best(searched):
    out, printed, _ = searched
    found = studies(out / "study.db")
    assert len(found["coarse"].trials) == 3 and len(found["fine"].trials) == 1  # a third of them fine
    ranked = re.findall(r"│\s+(\d)\s+│\s+(coarse|fine) #(\d)", printed)
    assert [int(r[0]) for r in ranked] == [1, 2, 3, 4] and ranked[0][1] == "fine", printed
    assert f"best configuration: {out / 'best.yaml'}" in printed
    assert f"reproduce it: zoo fit --config {out / 'best.yaml'}" in printed
    # the fine trial searched a range narrowed around the best coarse trial
    coarse_best = min(found["coarse"].trials, key=lambda t: t.value)
    (fine,) = found["fine"].trials
    span = math.log10(fine.params["model.optimizer.lr"] / coarse_best.params["model.optimizer.lr"])
    assert abs(span) <= 0.5 + 1e-9  # a quarter of the coarse two decades, each way
    png = out / "trials.png"
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert png.stat().st_size > 15_000
    assert (np.abs(pixels - (0xD6, 0x27, 0x28)).max(-1) <= 12).sum() > 50  # the best trial's star


@pytest.mark.slow
def test_search_never_loads_the_test_split(searched):
    _, _, asked = searched
    assert asked and "fit" in asked and not {"test", "predict"} & set(asked), asked


@pytest.mark.slow
def test_best_configuration_reproduces_the_winner(searched, zoo_cli, capsys):
    out, _, _ = searched
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert "tune" not in best and best["data"]["class_path"] == "test_tune.NoTestDigits"
    fine = studies(out / "study.db")["fine"].best_trial
    assert best["model"]["optimizer"]["lr"] == fine.params["model.optimizer.lr"]
    assert zoo_cli("fit", "--config", out / "best.yaml", "--test_after_fit", "false") == 0
    results = capsys.readouterr().out
    score = re.search(r"best val/loss\s+│\s+([\d.]+)", results)
    assert score and score.group(1) == f"{fine.value:.4f}", results  # the same run, the same score


@pytest.mark.slow
def test_resumed_search_continues_its_trial_count(searched, zoo_cli, capsys):
    out, _, _ = searched
    args = ["tune", "--recipe", "digits", "--trials", "5", "--output", out, "--seed", "1"]
    args += ["--data.class_path", "test_tune.NoTestDigits", "--data.batch_size", "32", *TINY]
    assert zoo_cli(*args) == 0
    printed = capsys.readouterr().out
    found = studies(out / "study.db")
    assert [t.number for t in found["coarse"].trials] == [0, 1, 2, 3]  # one more coarse trial, numbered on
    assert len(found["fine"].trials) == 1
    ran = re.findall(r"^  (coarse|fine) #(\d+):", printed, re.M)
    assert ran == [("coarse", "3")], printed


@pytest.mark.slow
def test_hopeless_trial_is_pruned_with_the_space_from_the_recipe(zoo_cli, capsys, tmp_path):
    import optuna

    recipe = yaml.safe_load(recipe_path("digits").read_text())
    recipe["tune"] = {
        "trials": 3,
        "fine_trials": 0,
        "coarse_epochs": 3,
        "startup_trials": 2,
        "space": {"model.optimizer.lr": "1e-6:1:log"},
    }
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(recipe))
    study = optuna.create_study(
        study_name="digits.coarse", storage=f"sqlite:///{tmp_path / 'study.db'}", direction="minimize"
    )
    for lr in (0.1, 0.1, 1e-6):  # two good runs, then a hopeless one
        study.enqueue_trial({"model.optimizer.lr": lr})
    args = ["--storage", tmp_path / "study.db", "--output", tmp_path / "out", "--study", "digits"]
    args += ["--trainer.limit_train_batches", "4", "--trainer.log_every_n_steps", "1", *FAST_TRAINER]
    assert zoo_cli("tune", "--config", path, *args) == 0
    printed = capsys.readouterr().out
    assert "searching model.optimizer.lr 1e-06:1:log" in printed  # the recipe's space, nothing else
    trials = optuna.load_study(
        study_name="digits.coarse", storage=f"sqlite:///{tmp_path / 'study.db'}"
    ).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert trials[2].user_attrs["pruned_at"] == 1 and max(trials[2].intermediate_values) == 1  # 2 of 3 epochs
    assert "pruned after epoch 1" in printed
    # the recipe with its tune: section is still a recipe zoo fit runs
    quick = [
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.log_every_n_steps",
        "1",
    ]
    quick += ["--test_after_fit", "false"]
    assert zoo_cli("fit", "--config", path, *quick, *FAST_TRAINER) == 0


@pytest.mark.slow
def test_two_workers_share_one_search(tmp_path):
    """Two processes at once on one SQLite storage run the 4 trials between them."""
    args = [
        ZOO,
        "tune",
        "--recipe",
        "digits",
        "--trials",
        "4",
        "--fine_trials",
        "0",
        "--output",
        tmp_path / "out",
    ]
    args = [str(a) for a in [*args, *TINY]]
    workers = [
        subprocess.Popen([*args, "--seed", str(i)], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    ran = [re.findall(r"^  coarse #(\d+):", out, re.M) for out in outputs]
    assert all(ran), outputs  # both workers ran trials
    numbers = sorted(int(n) for r in ran for n in r)
    assert numbers == list(range(len(numbers))) and 4 <= len(numbers) <= 5  # shared numbering, ~4 in all


def test_a_pruned_trial_is_ranked_and_shown_as_pruned():
    """Optuna gives a pruned trial its last reported score as its value: the table still says it was pruned and
    ranks it after the complete trials of its stage, even when that score is the best."""
    import optuna

    from zoo.tools.search_space import Param
    from zoo.tools.tune_report import table_rows

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")

    def objective(trial):
        lr = trial.suggest_float("model.optimizer.lr", 1e-3, 1.0, log=True)
        trial.report(0.01 if trial.number == 0 else 0.5, step=1)
        if trial.number == 0:
            trial.set_user_attr("pruned_at", 1)
            raise optuna.TrialPruned()
        return 0.5 + lr

    study.optimize(objective, n_trials=2)
    assert study.trials[0].state.name == "PRUNED" and study.trials[0].value is not None
    space = [Param("model.optimizer.lr", 1e-3, 1.0, log=True)]
    _, rows = table_rows([("coarse", t) for t in study.trials], space, "val/loss", "min")
    assert [(r[1], r[-1]) for r in rows] == [("coarse #1", "complete"), ("coarse #0", "pruned after epoch 1")]
