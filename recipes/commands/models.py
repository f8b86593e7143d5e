"""``zoo models [PATTERN]``: the zoo's models, and with a pattern the timm models that match it.

zoo models                      # every zoo model, one line each
zoo models 'resnet*'            # zoo models and timm models matching the pattern (timm/<name>)
zoo models 'convnext*' --pretrained   # only timm models with pretrained weights
zoo models resnet20             # an exact zoo name also lists its options and defaults
"""

from __future__ import annotations

import argparse

import timm
from rich.console import Console
from rich.table import Table

from zoo.registry import TIMM_PREFIX, list_models, model_description, model_options


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="zoo models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pattern", nargs="?", help="shell-style pattern, e.g. 'resnet*' or '*efficientnet*'")
    parser.add_argument("--pretrained", action="store_true", help="timm models with pretrained weights only")
    parser.add_argument("--limit", type=int, default=50, help="most timm models to list (default 50)")
    args = parser.parse_args(argv)
    console = Console(width=160)
    pattern = args.pattern.removeprefix(TIMM_PREFIX) if args.pattern else None

    table = Table(title="Zoo models (zoo.create_model(NAME) or --model.arch NAME)")
    table.add_column("name")
    table.add_column("what it is for", overflow="fold")
    for name in list_models(pattern):
        table.add_row(name, model_description(name))
    console.print(table)

    if pattern in list_models():
        options = Table(title=f"Options of {pattern}", caption="set with --model.model_kwargs '{KEY: VALUE}'")
        options.add_column("option")
        options.add_column("default")
        for key, default in model_options(pattern).items():
            options.add_row(key, repr(default))
        console.print(options)

    if pattern:
        matches = timm.list_models(pattern, pretrained=args.pretrained)
        shown = ", ".join(f"{TIMM_PREFIX}{n}" for n in matches[: args.limit])
        more = f" (and {len(matches) - args.limit} more; --limit N)" if len(matches) > args.limit else ""
        kind = "timm models with pretrained weights" if args.pretrained else "timm models"
        console.print(f"{len(matches)} {kind} match {pattern!r}: {shown or '(none)'}{more}", highlight=False)
    else:
        console.print("timm's models: zoo models PATTERN (e.g. 'efficientnet*'); use them as timm/<name>.")
    return 0
