"""The command lines of the zoo's own commands, in LightningCLI's style, and the recipe glue they share.

One style: options are snake_case (``--min_lr``, ``--val_fraction``, as Lightning's ``--ckpt_path``), and a switch
takes ``true`` or ``false`` (``--weights_only false``), alone meaning ``true`` (``--own_arch``, as Lightning's
``--print_config``). A command that builds a recipe reads the rest of its line as ``zoo fit`` does
(``--recipe NAME``, ``--config FILE``, ``--section.key value``, ``--logger``): :func:`parse` splits the two, then
:meth:`RecipeArgs.build` instantiates the recipe without running it. An old spelling (``--min-lr``) or a mistake
ends in one error line with a "did you mean" (:func:`zoo.errors.did_you_mean`), not in a second way.

Written on argparse (not jsonargparse) because these commands are quick (``zoo check-data`` imports no torch) and
pass every option they do not own on to the zoo's LightningCLI.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooError, did_you_mean

BOOLEAN = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
# options of the zoo's commands spelt another way before; any other `--a-b` is found by its `--a_b`
RENAMED = {
    **{f"--{k}": f"--data.{k}" for k in ("val_fraction", "test_fraction", "seed", "channels", "image_size")},
    **{f"--{k.replace('_', '-')}": f"--data.{k}" for k in ("val_fraction", "test_fraction", "image_size")},
    "--no-decode": "--decode false",
    "--no-hash": "--hash false",
    "--no-weights-only": "--weights_only false",
}


class CommandParser(argparse.ArgumentParser):
    """argparse's parser whose mistakes are raised (one ``error:`` line from the ``zoo`` command, exit 2) instead
    of printed with the usage, which takes no abbreviation (``--out`` for ``--output`` would be a second spelling,
    and could take an option meant for the recipe), and whose switches (:meth:`add_switch`) take ``true`` or
    ``false`` or stand alone."""

    def __init__(self, prog: str, description: str, epilog: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(
            prog=f"zoo {prog}", description=description, epilog=epilog, allow_abbrev=False, **kwargs
        )
        self.switches: set[str] = set()

    def add_switch(self, name: str, help: str, default: bool = False, group=None) -> None:
        """``--name [true|false]`` (in ``group``, an argument group of this parser): alone it means true."""
        (group or self).add_argument(name, type=boolean, default=default, metavar="true|false", help=help)
        self.switches.add(name)

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, with ``true`` after a switch that stands alone (:func:`switch_values`)."""
        return super().parse_known_args(switch_values(sys.argv[1:] if args is None else args, self.switches))

    def error(self, message: str):
        raise argparse.ArgumentError(None, message)

    def options(self) -> list[str]:
        """The options the parser takes (``--min_lr``, ...), as its usage line lists them."""
        return list(dict.fromkeys(re.findall(r"--[\w.]+", self.format_usage())))


def switch_values(args: list[str], switches: set[str]) -> list[str]:
    """``args`` with ``true`` after each of the ``switches`` that stands alone (not followed by true or false), so
    that a switch never takes the word after it (``zoo models --pretrained 'convnext*'``) for its value."""
    given = []
    for i, arg in enumerate(args):
        given.append(arg)
        if arg in switches and (i + 1 == len(args) or args[i + 1].lower() not in BOOLEAN):
            given.append("true")
    return given


def boolean(text: str) -> bool:
    """``true``/``false`` (also ``yes``/``no``, ``1``/``0``), as LightningCLI reads a bool."""
    if text.lower() not in BOOLEAN:
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return BOOLEAN[text.lower()]


def positive(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, not {text!r}")
    return value


def check_spelling(parser: CommandParser, given: list[str], recipe: bool) -> None:
    """Refuse, in one line, an option of ``given`` (what ``parser`` left) spelt the old way, or (without a
    ``recipe``) any option at all. With a ``recipe`` the rest goes on to the LightningCLI, which has its own
    "did you mean": only the command's own options in another spelling (``--min-lr``, ``--no-hash``) stop here."""
    own = parser.options()
    for arg in given:
        name = arg.split("=", 1)[0]
        if not name.startswith("--"):
            continue
        new = RENAMED.get(name, "--" + name[2:].replace("-", "_"))
        if new != name and new.split()[0] in own:
            raise argparse.ArgumentError(None, f"unrecognized arguments: {arg} (did you mean {new!r}?)")
        if not recipe:
            raise argparse.ArgumentError(None, f"unrecognized arguments: {arg}{did_you_mean(name, own)}")
    if given and not recipe:
        raise argparse.ArgumentError(None, f"unrecognized arguments: {' '.join(given)}")


@dataclass
class RecipeArgs:
    """A recipe named on a command's line: LightningCLI's options for it (``--config FILE`` first, then the
    overrides, ``--logger`` expanded) and the name to show for it (the recipe's, or the config file's stem)."""

    options: list[str]
    label: str
    own: tuple[str, ...] = ()  # the command's own options, for the "did you mean" of one the recipe refuses

    def build(self, *extra: str, cli_class=None):
        """The recipe's trainer, model and data module, instantiated as ``zoo fit`` would and not run
        (:func:`recipes.lightning_cli.build_recipe`), with ``extra`` options after the command line's."""
        from recipes.lightning_cli import build_recipe

        try:
            return build_recipe([*self.options, *extra], cli_class=cli_class)
        except argparse.ArgumentError as err:  # an option neither the command nor the recipe knows
            unknown = re.search(r"unrecognized arguments: (--[\w-]+)", str(err))
            hint = did_you_mean(unknown.group(1), self.own) if unknown else ""
            if hint:  # a close option of the command's own comes before the recipe's
                err.zoo_hint = hint
            raise


def parse(
    parser: CommandParser, argv: list[str], recipe: bool = True, required: bool = True
) -> tuple[argparse.Namespace, RecipeArgs | None]:
    """The command's own options, and (``recipe``: the parser has ``--recipe``) the recipe the rest of ``argv``
    names, as ``zoo fit`` reads it; None when it names none and is not ``required``."""
    args, rest = parser.parse_known_args(argv)
    check_spelling(parser, rest, recipe)
    if not recipe:
        return args, None
    from recipes.lightning_cli import expand_logger, expand_recipe

    options = expand_logger(expand_recipe((["--recipe", args.recipe] if args.recipe else []) + rest))
    if "--config" not in options:
        if required:
            raise ZooError(f"{parser.prog} needs --recipe NAME or --config FILE")
        return args, None
    label = args.recipe or Path(options[options.index("--config") + 1]).stem
    return args, RecipeArgs(options, label, tuple(parser.options()))
