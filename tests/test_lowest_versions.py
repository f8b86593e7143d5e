"""pyproject.toml's bounds and ``make test-lowest`` agree: every requirement has a lower bound, the target installs
exactly those (lowest_versions.py turns them into pip constraints) and runs the fast suite, and every runtime
dependency has an upper bound above it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip(
    "tomllib", reason="lowest_versions.py reads pyproject.toml with Python 3.11's tomllib"
)
ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("lowest_versions", ROOT / "lowest_versions.py")
lowest_versions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lowest_versions)
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_requirement_is_pinned_at_its_lower_bound():
    pins = lowest_versions.constraints()
    for requirement in lowest_versions.requirements():
        name = re.match(r"[\w.-]+", requirement).group(0).lower()
        if name == PROJECT["name"]:
            continue
        bound = re.search(r"(?:>=|==)\s*([^,;\s]+)", requirement).group(1)
        assert pins[lowest_versions.normalise(name)] == f"{lowest_versions.normalise(name)}=={bound}"
    assert "jsonargparse" in pins  # its extra, [signatures], stripped: pip takes no extras in constraints


def test_every_runtime_dependency_has_an_upper_bound_above_its_lower_one():
    for requirement in PROJECT["dependencies"]:
        low = re.search(r">=\s*([\d.]+)", requirement)
        high = re.search(r"<\s*([\d.]+)", requirement)
        assert low and high, f"pyproject.toml: {requirement!r} needs >=LOWEST,<NEXT_MINOR"
        as_tuple = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
        assert as_tuple(low.group(1)) < as_tuple(high.group(1)), requirement


def test_the_make_target_installs_the_constraints_checks_them_then_lints_builds_the_docs_and_tests():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest-lowest:", 1)[1].split("\n\n", 1)[0]
    steps = [line.strip() for line in recipe.splitlines() if line.startswith("\t")]
    assert "$(LOWEST)/bin/python lowest_versions.py > $(LOWEST)/constraints.txt" in steps
    assert "$(LOWEST)/bin/python -m pip install --quiet -c $(LOWEST)/constraints.txt -e '.[dev]'" in steps
    assert steps[-5:] == [
        "$(LOWEST)/bin/python lowest_versions.py --check",
        "$(LOWEST)/bin/ruff check .",
        "$(LOWEST)/bin/ruff format --check .",
        "$(LOWEST)/bin/mkdocs build --strict --site-dir $(LOWEST)/site",
        '$(LOWEST)/bin/python -m pytest -m "not slow" -q',
    ]


def test_a_requirement_without_a_lower_bound_is_an_error_naming_it(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "p"\ndependencies = ["torch>=2.14.1", "rich"]\n')
    with pytest.raises(ValueError, match=r"'rich' has no lower bound"):
        lowest_versions.constraints(pyproject)


def test_requirements_are_read_with_extras_markers_and_self_references(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "my-proj"\ndependencies = ["jsonargparse[signatures]>=4.51.0,<4.54"]\n'
        "[project.optional-dependencies]\nx = [\"Foo_Bar >= 1.2 ; python_version < '3.12'\"]\n"
        'dev = ["my-proj[x]", "pin==0.1.0"]\n'
    )
    assert lowest_versions.constraints(pyproject) == {
        "jsonargparse": "jsonargparse==4.51.0",
        "foo-bar": "foo-bar==1.2 ; python_version < '3.12'",
        "pin": "pin==0.1.0",
    }


def test_the_check_compares_versions_as_pip_does():
    assert lowest_versions.same_version("0.17", "0.17.0") and not lowest_versions.same_version("1.7", "1.7.1")
    installed = lowest_versions.metadata.version("pytest")
    assert lowest_versions.mismatches({"pytest": f"pytest=={installed}"}) == []
    assert lowest_versions.mismatches({"pytest": "pytest==0.0.1"}) == [
        f"pytest: {installed}, pyproject.toml's lower bound is 0.0.1"
    ]
    assert lowest_versions.mismatches({"no-such-dist": "no-such-dist==1"}) == [
        "no-such-dist: not installed, pyproject.toml's lower bound is 1"
    ]
