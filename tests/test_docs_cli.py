"""docs/cli.md's command table has a row for every command that ``zoo`` dispatches."""

from __future__ import annotations

import re
from pathlib import Path

from recipes.cli import COMMANDS, LIGHTNING_COMMANDS

CLI_DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def documented_commands() -> set[str]:
    """The commands named in the first cell of the rows under '## Commands' (`zoo a` / `zoo b`)."""
    section = CLI_DOC.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| `zoo ")]
    return {name for row in rows for name in re.findall(r"`zoo ([\w-]+)", row)}


def test_the_command_table_lists_every_command():
    missing = sorted({*COMMANDS, *LIGHTNING_COMMANDS} - documented_commands())
    assert not missing, f"docs/cli.md's command table has no row for: {', '.join(missing)}"
