"""Every file of the project that a comment or docstring of its code names exists (e.g. ``see zoo/compat.py``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "callbacks", "recipes")
# a project path: a top-level folder of the repository, then a file name; placeholders (NAME.yaml) are skipped
PATH = re.compile(
    r"(?<![\w/.-])((?:zoo|callbacks|recipes|tests|benchmarks|docs)/[\w/.-]*\.(?:py|md|yaml|sbatch))"
)
SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def named_paths(text: str) -> list[str]:
    return [p for p in PATH.findall(text) if not any(part.isupper() for part in Path(p).stem.split("_"))]


def test_the_scan_finds_paths_and_skips_placeholders():
    text = "see zoo/compat.py and docs/cli.md; recipes/configs/NAME.yaml; a.zoo/x.py is not one"
    assert named_paths(text) == ["zoo/compat.py", "docs/cli.md"]


def test_every_file_named_in_the_source_exists():
    missing = [
        f"{source.relative_to(ROOT)}: {path}"
        for source in SOURCES
        for path in named_paths(source.read_text())
        if not (ROOT / path).exists()
    ]
    assert not missing, f"files named in the source that do not exist: {missing}"
