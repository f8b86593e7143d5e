"""``zoo recipes``: the shipped recipes, one line each (name, model, data, purpose), read from the YAML files."""

from __future__ import annotations

import argparse

from recipes.catalog import load_recipe, recipe_names
from zoo.console import print_table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="zoo recipes", description=__doc__)
    parser.parse_args(argv)
    rows = [(r.name, r.model, r.data, r.description) for r in map(load_recipe, recipe_names())]
    print_table(
        "Shipped recipes (zoo fit --recipe NAME)",
        ("name", "model", "data", "what it is for"),
        rows,
        width=160,
    )
    return 0
