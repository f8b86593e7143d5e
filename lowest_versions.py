"""The lowest versions that pyproject.toml allows, as pip constraints, and a check that they are installed.

``python lowest_versions.py`` prints one ``name==X`` line for every requirement of ``[project]
dependencies`` and of every extra: X is its lower bound ``>=X`` (or its pin ``==X``). ``make test-lowest``
installs the project with its dev extra under these constraints into ``.venv-lowest``, checks with
``python lowest_versions.py --check`` that the versions installed are those, and runs the fast suite there:
a lower bound in pyproject.toml is thereby one that installs and passes (requirements not named in
pyproject.toml, e.g. numpy's own dependencies, resolve to their newest release, as for a user).
Needs Python 3.11+ (tomllib); parses the requirements itself so that it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parent / "pyproject.toml"
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def normalise(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """Every requirement string of the project: its dependencies, then each extra's, in file order."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [*project.get("dependencies", []), *(r for group in extras.values() for r in group)]


def lowest(requirement: str) -> tuple[str, str | None, str]:
    """(name, lowest version allowed or None when unbounded below, environment marker) of one requirement."""
    match = REQUIREMENT.match(requirement)
    if not match:
        raise ValueError(f"pyproject.toml: cannot read the requirement {requirement!r}")
    name, _extras, specifiers, marker = match.groups()
    bound = None
    for spec in filter(None, (s.strip() for s in specifiers.split(","))):
        if spec.startswith((">=", "==")) and not spec.endswith("*"):
            bound = spec[2:].strip()
    return normalise(name), bound, (marker or "").strip()


def constraints(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """{name: ``name==X[; marker]``} for every requirement but the project itself (its extras' self-reference).

    A requirement with no lower bound is an error naming it: it would install the newest release, untested.
    """
    project = normalise(tomllib.loads(pyproject.read_text())["project"]["name"])
    pins: dict[str, str] = {}
    for requirement in requirements(pyproject):
        name, bound, marker = lowest(requirement)
        if name == project:
            continue
        if bound is None:
            raise ValueError(f"pyproject.toml: {requirement!r} has no lower bound (>=X); give it one")
        if name in pins and pins[name].split(";")[0] != f"{name}=={bound}":
            raise ValueError(f"pyproject.toml: {name} has two lower bounds ({pins[name]}, {bound}); keep one")
        pins[name] = f"{name}=={bound}" + (f" {marker}" if marker else "")
    return pins


def same_version(a: str, b: str) -> bool:
    """Equal as PEP 440 compares plain releases (``0.17`` is ``0.17.0``); other versions as written."""

    def release(version: str) -> tuple | str:
        parts = version.split(".")
        if not all(p.isdigit() for p in parts):
            return version
        while len(parts) > 1 and int(parts[-1]) == 0:
            parts.pop()
        return tuple(int(p) for p in parts)

    return release(a) == release(b)


def mismatches(pins: dict[str, str]) -> list[str]:
    """The pins whose installed version differs (or that are not installed), one line each."""
    wrong = []
    for name, pin in pins.items():
        want = pin.split(";")[0].split("==")[1].strip()
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have is None or not same_version(have, want):
            wrong.append(f"{name}: {have or 'not installed'}, pyproject.toml's lower bound is {want}")
    return wrong


def main(argv: list[str]) -> int:
    pins = constraints()
    if argv[1:] == ["--check"]:
        wrong = mismatches(pins)
        for line in wrong:
            print(line, file=sys.stderr)
        print(f"{len(pins) - len(wrong)} of {len(pins)} requirements at their lowest allowed version")
        return 1 if wrong else 0
    print("\n".join(pins.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
