"""``zoo models [PATTERN]``: the zoo's models, and with a pattern the timm models that match it.

zoo models                      # every zoo model, one line each
zoo models 'resnet*'            # zoo models and timm models matching the pattern (timm/<name>)
zoo models 'convnext*' --pretrained   # only timm models with pretrained weights
zoo models resnet20             # an exact zoo name also lists its options and defaults
"""

from __future__ import annotations

import fnmatch

from recipes.command_args import CommandParser, parse
from recipes.model_index import MODELS
from zoo.runtime.console import print_line, print_table

TIMM_PREFIX = "timm/"  # as in zoo.models.registry, which imports torch


def main(argv: list[str]) -> int:
    parser = CommandParser("models", __doc__)
    parser.add_argument("pattern", nargs="?", help="shell-style pattern, e.g. 'resnet*' or '*efficientnet*'")
    parser.add_switch("--pretrained", "timm models with pretrained weights only")
    parser.add_argument("--limit", type=int, default=50, help="most timm models to list (default 50)")
    args, _ = parse(parser, argv, recipe=False)
    pattern = args.pattern.removeprefix(TIMM_PREFIX) if args.pattern else None

    names = [n for n in MODELS if fnmatch.fnmatch(n, pattern)] if pattern else list(MODELS)
    rows = [(name, MODELS[name]) for name in names]
    print_table(
        "Zoo models (zoo.create_model(NAME) or --model.arch NAME)",
        ("name", "what it is for"),
        rows,
        width=160,
    )

    if pattern in MODELS:
        from zoo.models.registry import model_options

        options = [(key, repr(default)) for key, default in model_options(pattern).items()]
        print_table(f"Options of {pattern}", ("option", "default"), options, width=160)
        print_line("Set them with --model.model_kwargs '{KEY: VALUE}'.", width=160)
        if "drop_path_rate" in dict(options):  # zoo.create_model's; in a run, the callback's
            print_line(
                "In a run, stochastic depth is --trainer.callbacks+=callbacks.StochasticDepth "
                "--trainer.callbacks.drop_path_rate R, not drop_path_rate (docs/regularisation.md).",
                width=160,
            )

    if pattern:
        import timm

        matches = timm.list_models(pattern, pretrained=args.pretrained)
        shown = ", ".join(f"{TIMM_PREFIX}{n}" for n in matches[: args.limit])
        more = f" (and {len(matches) - args.limit} more; --limit N)" if len(matches) > args.limit else ""
        kind = "timm models with pretrained weights" if args.pretrained else "timm models"
        print_line(f"{len(matches)} {kind} match {pattern!r}: {shown or '(none)'}{more}", width=160)
    else:
        print_line(
            "timm's models: zoo models PATTERN (e.g. 'efficientnet*'); use them as timm/<name>.", width=160
        )
    return 0
