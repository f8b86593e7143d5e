"""``zoo recipes``: the shipped recipes, one line each (name, model, data, purpose)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from recipes.catalog import load_recipe, recipe_names


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo recipes", description=__doc__)
    parser.parse_args(argv)
    table = Table(title="Shipped recipes (zoo fit --recipe NAME)")
    for column in ("name", "model", "data", "what it is for"):
        table.add_column(column, overflow="fold")
    for name in recipe_names():
        r = load_recipe(name)
        table.add_row(r.name, r.model, r.data, r.description)
    Console(width=160).print(table)
    return 0
