"""One way to print a table in the terminal (Rich), for every command and report of the zoo.

Importing this module imports neither torch nor Lightning, so the fast commands (``zoo recipes``, ``zoo models``)
can use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

WIDTH = 140


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Sequence[str] = (),
    header: bool = True,
    caption: str | None = None,
    bold: Iterable[int] = (),
    width: int = WIDTH,
) -> None:
    """Print ``rows`` (one sequence of cells each, shown with ``str``) under ``columns``; the columns named in
    ``right`` are right-aligned (numbers), the rows whose index is in ``bold`` are bold."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=header, caption=caption)
    for i, column in enumerate(columns):
        table.add_column(
            column,
            justify="right" if column in right else "left",
            overflow="fold",
            style="bold" if not header and i == 0 else None,
        )
    emphasised = set(bold)
    for i, row in enumerate(rows):
        table.add_row(*(str(cell) for cell in row), style="bold" if i in emphasised else None)
    Console(width=width).print(table)


def print_line(text: str, width: int = WIDTH) -> None:
    """One line through the same console (Rich markup such as ``[yellow]...[/]`` allowed, no auto-highlight)."""
    from rich.console import Console

    Console(width=width).print(text, highlight=False)
