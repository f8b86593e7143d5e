"""``zoo``, ``zoo --help``, ``zoo recipes`` and ``zoo models`` import neither torch nor Lightning (they answer at
once); ``zoo fit --help`` still lists every option; the commands do not import the dispatcher back."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import recipes

HEAVY = ("torch", "lightning", "timm", "torchvision", "wandb")
PROBE = """
import json, sys
from recipes.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}), file=sys.stderr)
"""


def imported_by(*argv: str) -> tuple[int, list[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,), *argv], capture_output=True, text=True, timeout=120
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], report["heavy"], done.stdout


@pytest.mark.parametrize(
    "argv", [(), ("--help",), ("recipes",), ("models",)], ids=["zoo", "help", "recipes", "models"]
)
def test_fast_commands_import_neither_torch_nor_lightning(argv):
    code, heavy, out = imported_by(*argv)
    assert code == 0 and heavy == []
    expected = {(): "Shipped recipes:", ("--help",): "usage: zoo COMMAND", ("recipes",): "DigitsDataModule"}
    assert expected.get(argv, "resnet110") in out


def test_models_with_a_pattern_lists_timm_models_too():
    code, heavy, out = imported_by("models", "resnet2*")
    assert code == 0 and "timm" in heavy  # searching timm's names needs timm: allowed
    assert "resnet20" in out and "timm/resnet26d" in out


def test_the_model_list_is_the_registrys():
    from recipes.model_index import MODELS, current

    assert current() == MODELS, "models changed: run `python -m recipes.model_index` to rewrite the list"


def test_fit_help_is_still_complete(zoo_cli, capsys):
    with pytest.raises(SystemExit) as done:
        zoo_cli("fit", "--help")
    assert done.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--trainer.max_epochs",
        "--model.optimizer",
        "--data CONFIG",
        "--checkpoint.max_abs_weight",
        "--last_checkpoint.every_n_train_steps",
        "--finetune.strategy",
        "--test_after_fit",
        "--ckpt_path",
        "--weights_only",
    ):
        assert option in out, option


def test_commands_do_not_import_the_dispatcher():
    """recipes/cli.py loads the commands by name; a command importing it back would close a cycle."""
    folder = Path(recipes.__file__).parent
    for path in [*folder.glob("commands/*.py"), *folder.glob("*.py")]:
        if path.name == "cli.py":
            continue
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "recipes.cli" not in imported, path


def test_the_console_script_freezes_the_heap_before_the_interpreter_exits():
    """``zoo`` is ``recipes.cli:entry``: after the command, the objects left are frozen (``gc.freeze``), so the
    interpreter's shutdown does not walk them all with the cycle collector (~1 s per command)."""
    import tomllib

    scripts = tomllib.loads((Path(recipes.__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert scripts["scripts"]["zoo"] == "recipes.cli:entry"
    probe = (
        "import gc, sys; from recipes.cli import entry; code = entry(); print(code, gc.get_freeze_count())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "recipes"], capture_output=True, text=True, timeout=120
    )
    code, frozen = done.stdout.split()[-2:]
    assert code == "0" and int(frozen) > 1000


LOAD_PROBE = """
import gc, sys
import recipes.cli as cli
cli._FREEZE_IMPORTS = sys.argv[1] == "zoo"
full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and full.append(1))
cli.load("recipes.lightning_cli")
print(len(full), gc.get_freeze_count(), gc.isenabled())
"""


@pytest.mark.parametrize("process", ["zoo", "python"])
def test_the_zoo_process_imports_its_command_without_full_collections_and_freezes_what_it_made(process):
    """In the ``zoo`` process (``entry``), importing a command runs no full collection (each one scans every object
    made so far: 7 of them, 0.6 s, for a Lightning command) and freezes what the import made, so that later full
    collections skip it; the collector is on again after. A Python caller's ``main`` imports as usual."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE, process], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    full, frozen, enabled = done.stdout.split()[-3:]
    assert enabled == "True"
    if process == "zoo":
        assert full == "0" and int(frozen) > 100_000
    else:
        assert int(full) >= 1 and frozen == "0"  # torch, timm and Lightning: several full collections
