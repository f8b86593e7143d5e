"""The zoo's own commands spell their options as LightningCLI does (snake_case; a switch takes true or false or
stands alone), an old spelling ends in one line naming the new one, and one module reads every command line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from recipes.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def help_of(zoo_cli, capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        zoo_cli(*argv, "--help")
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"data"}))
def test_every_option_of_the_zoos_commands_is_snake_case(zoo_cli, capsys, command):
    usage = help_of(zoo_cli, capsys, command).split("\n\n")[0]  # the usage lines
    assert usage.startswith(f"usage: zoo {command} ")
    assert [o for o in re.findall(r"--[\w.-]+", usage) if "-" in o[2:]] == [], usage


def test_zoo_data_optimize_is_snake_case_too(zoo_cli, capsys):
    out = help_of(zoo_cli, capsys, "data", "optimize")
    assert "--num_workers" in out and "--chunk_bytes" in out
    assert not [o for o in re.findall(r"--[\w.-]+", out) if "-" in o[2:]]


def test_zoo_data_optimize_takes_a_switch_alone_and_no_abbreviation(zoo_cli, capsys, tmp_path):
    def refused(*argv: str) -> str:
        try:
            code = zoo_cli("data", "optimize", "--output", str(tmp_path), *argv)
        except SystemExit as done:
            code = done.code
        assert code == 2
        return capsys.readouterr().err

    (tmp_path / "dataset.json").write_text("{}")  # a streaming data set already there
    assert "already holds a streaming data set" in refused()
    assert refused("--overwrite").splitlines()[0] == "error: give --data.root, the image folder to convert"
    err = refused("--outpt", "x")
    assert err.splitlines()[0] == "error: unrecognized arguments: --outpt x (did you mean '--output'?)"
    assert "usage:" not in err
    assert "did you mean '--output'" in refused("--out", "x")  # no abbreviation


@pytest.mark.parametrize(
    "argv, new",
    [
        (("lr-find", "--recipe", "digits", "--min-lr", "1e-5"), "--min_lr"),
        (("lr-find", "--recipe", "digits", "--max-lr=1"), "--max_lr"),
        (("tune", "--recipe", "digits", "--coarse-epochs", "1"), "--coarse_epochs"),
        (("ensemble", "--recipe", "digits", "--ckpt", "a.ckpt", "--own-arch"), "--own_arch"),
        (("ensemble", "--recipe", "digits", "--ckpt", "a.ckpt", "--no-weights-only"), "--weights_only false"),
        (("check-data", "photos", "--val-fraction", "0.1"), "--data.val_fraction"),
        (("check-data", "photos", "--val_fraction", "0.1"), "--data.val_fraction"),
        (("check-data", "photos", "--seed=3"), "--data.seed"),
        (("check-data", "photos", "--no-hash"), "--hash false"),
        (("check-data", "photos", "--labels", "--image-size", "64"), "--data.image_size"),
        (("summary", "resnet20", "--input-size", "3", "32", "32"), "--input_size"),
    ],
)
def test_an_old_spelling_is_one_line_naming_the_new_one(zoo_cli, capsys, argv, new):
    with pytest.raises(SystemExit) as done:
        zoo_cli(*argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    first, *rest = err.strip().splitlines()
    assert first.startswith("error: unrecognized arguments: --") and f"(did you mean {new!r}?)" in first, err
    assert rest == [f"`zoo {argv[0]} --help` lists every option"], err


def test_a_mistyped_option_of_a_command_without_a_recipe_gets_a_did_you_mean(zoo_cli, capsys):
    with pytest.raises(SystemExit) as done:
        zoo_cli("summary", "resnet20", "--dept", "1")
    assert done.value.code == 2
    assert "unrecognized arguments: --dept (did you mean '--depth'?)" in capsys.readouterr().err


def test_an_option_neither_the_command_nor_the_recipe_knows_gets_the_commands_did_you_mean(zoo_cli, capsys):
    with pytest.raises(SystemExit) as done:
        zoo_cli("lr-find", "--recipe", "digits", "--stepz", "20")
    assert done.value.code == 2
    assert "unrecognized arguments: --stepz 20 (did you mean '--steps'?)" in capsys.readouterr().err


def test_a_switch_alone_means_true_and_never_takes_the_word_after_it(zoo_cli, capsys):
    assert zoo_cli("models", "--pretrained", "resnet1*") == 0  # the pattern is not --pretrained's value
    alone = capsys.readouterr().out
    assert zoo_cli("models", "resnet1*", "--pretrained", "true") == 0
    assert capsys.readouterr().out == alone and "timm models with pretrained weights match" in alone
    with pytest.raises(SystemExit) as done:
        zoo_cli("models", "resnet1*", "--pretrained", "maybe")  # not a boolean: the pattern's second word
    assert done.value.code == 2
    assert "unrecognized arguments: maybe" in capsys.readouterr().err


def test_no_command_parses_its_line_or_expands_a_recipe_by_itself():
    """The parse → expand → build glue lives in recipes/command_args.py alone."""
    for path in sorted((REPO / "recipes" / "commands").glob("*.py")):
        if path.name == "data.py":  # `zoo data optimize` builds a data module alone, with jsonargparse
            continue
        tree = ast.parse(path.read_text())
        called = {
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
        }
        glue = {"ArgumentParser", "parse_args", "parse_known_args", "expand_recipe", "build_recipe"}
        assert not called & glue, path.name


def test_lightning_commands_are_listed_once():
    import recipes.cli
    import recipes.lightning_cli

    assert recipes.cli.LIGHTNING_COMMANDS is recipes.lightning_cli.LIGHTNING_COMMANDS
    assert "LIGHTNING_COMMANDS =" not in (REPO / "recipes" / "cli.py").read_text()


# options a command passes on to the recipe it builds, as `zoo fit` reads them
RECIPE_OPTIONS = {
    "--config",
    "--logger",
    "--data",
    "--model",
    "--trainer",
    "--seed_everything",
    "--print_config",
}


def test_the_docs_and_readme_type_only_options_the_commands_take(zoo_cli, capsys):
    """Every ``--option`` after ``zoo COMMAND`` on a line of the docs or README (up to a comment or the end of a
    code span) is one the command takes: no page types an old spelling."""
    taken = {c: set(re.findall(r"--[\w.]+", help_of(zoo_cli, capsys, c))) for c in COMMANDS if c != "data"}
    wrong = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in page.read_text().splitlines():
            for command, rest in re.findall(r"zoo ([\w-]+)([^`#|]*)", line):
                for option in re.findall(r"(?<![\w-])--[\w-]+(?![\w.-])", rest):  # no --section.key
                    if command in taken and option not in taken[command] | RECIPE_OPTIONS:
                        wrong.append(f"{page.name}: zoo {command} {option}")
    assert not wrong, wrong
