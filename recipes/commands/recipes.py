"""``zoo recipes``: the shipped recipes, one line each (name, model, data, purpose), read from the YAML files."""

from __future__ import annotations

from recipes.catalog import load_recipe, recipe_names
from recipes.command_args import CommandParser, parse
from zoo.runtime.console import print_table


def main(argv: list[str]) -> int:
    parse(CommandParser("recipes", __doc__), argv, recipe=False)
    rows = [(r.name, r.model, r.data, r.description) for r in map(load_recipe, recipe_names())]
    print_table(
        "Shipped recipes (zoo fit --recipe NAME)",
        ("name", "model", "data", "what it is for"),
        rows,
        width=160,
    )
    return 0
