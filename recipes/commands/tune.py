"""``zoo tune --recipe NAME --trials N [overrides]``: search a recipe's lr, weight decay, dropout and warmup.

The recipe is parsed by the zoo's CLI as for ``zoo fit`` (overrides work the same) into one complete config;
:class:`recipes.tuning.Search` runs each trial as a ``zoo fit`` of that config with the trial's values, coarse to fine,
scored on the validation split; :mod:`zoo.tools.tune_report` prints the ranked trials, draws them, and writes the winner
as a recipe that ``zoo fit --config`` runs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from recipes.command_args import CommandParser, RecipeArgs, parse
from zoo.errors import ZooError, ensure_writable

EPILOG = """examples:
  zoo tune --recipe digits --trials 30
  zoo tune --recipe digits --trials 30 --timeout 2h --space model.optimizer.momentum=0.5:0.99
  zoo tune --recipe finetune --data.root photos --trials 20 --space model.drop_rate=off
  zoo tune --recipe digits --trials 60 --storage sqlite:////shared/tune/digits.db --output /shared/tune/digits
The same command again continues the search (same --storage); several at once share it.
Any other option overrides the recipe as in `zoo fit`. A recipe may hold these settings in a `tune:` section."""

SETTINGS = (
    "trials",
    "fine_trials",
    "timeout",
    "coarse_epochs",
    "fine_epochs",
    "metric",
    "mode",
    "startup_trials",
)


def seconds(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (90, 90s, 30m, 2h), not {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a time > 0, not {text!r}")
    return value


def parser() -> CommandParser:
    parser = CommandParser(
        "tune",
        "Search lr, weight decay, dropout and warmup (Optuna: TPE, median pruning), coarse to fine, on the "
        "validation split; print the ranked trials, draw them, write the best as a recipe.",
        EPILOG,
    )
    add = parser.add_argument
    add("--recipe", help="a shipped recipe (or give --config FILE)")
    add("--trials", type=int, help="trials of the whole search, every worker together (default 20)")
    add("--fine_trials", type=int, help="how many of them are fine trials (default: a third)")
    add("--timeout", type=seconds, help="start no new trial after this long (90s, 30m, 2h)")
    add("--coarse_epochs", type=int, help="epochs of a coarse trial (default: a quarter of the recipe's)")
    add("--fine_epochs", type=int, help="epochs of a fine trial (default: the recipe's)")
    add("--metric", help="validation metric to score (default: the recipe's checkpoint.monitor)")
    add("--mode", choices=("min", "max"), help="min or max (default: the recipe's checkpoint.mode)")
    add("--startup_trials", type=int, help="trials of a stage that run to the end before pruning (default 5)")
    add(
        "--space",
        action="append",
        metavar="KEY=LOW:HIGH[:log][:int]",
        help="search KEY over a range; KEY=off: not",
    )
    add("--study", help="the search's name (default: the recipe's)")
    add("--storage", help="Optuna storage shared by the workers (default: OUTPUT/study.db, SQLite)")
    add("--output", help="folder of the trials, plot and best recipe (default: runs/tune/STUDY)")
    add("--seed", type=int, help="seed of the TPE sampler (default: none; give each worker its own)")
    parser.add_switch("--keep_checkpoints", "keep every trial's checkpoints (default: deleted)")
    return parser


def recipe_config(recipe: RecipeArgs) -> dict:
    """The recipe with the overrides, every option filled in, as ``zoo fit`` would run it (nothing built)."""
    import yaml

    from recipes.lightning_cli import ZooCLI

    class ParseOnly(ZooCLI):
        def before_instantiate_classes(self):
            pass

        def instantiate_classes(self):
            pass

        def after_instantiate_classes(self):
            pass

    cli = recipe.build(cli_class=ParseOnly)
    return yaml.safe_load(cli.parser.dump(cli.config, skip_none=False))


def settings_from(config: dict, args: argparse.Namespace):
    from recipes.tuning import TuneSettings

    settings = TuneSettings.from_section(config.pop("tune", None))
    for name in SETTINGS:
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    settings.check()
    return settings


def default_epochs(config: dict) -> int:
    """A coarse trial's epochs: a quarter of the recipe's (a fine-tuning recipe sized by its data: a quarter of
    the budget's default epochs, after the probe)."""
    epochs = (config.get("trainer") or {}).get("max_epochs")
    if epochs and epochs > 0:
        return max(1, round(epochs / 4))
    finetune = config.get("finetune") or {}
    if finetune.get("strategy", "none") != "none":
        from callbacks.finetune_strategies import DEFAULT_EPOCHS

        return max(1, math.ceil(DEFAULT_EPOCHS / 4))
    raise ZooError("the recipe sets no trainer.max_epochs: give --coarse_epochs and --fine_epochs")


def space_from(config: dict, settings, args, coarse_epochs: int):
    from zoo.tools.search_space import check_keys, default_space, parse_param

    if settings.space is None:
        space = default_space(config, coarse_epochs)
    elif isinstance(settings.space, dict):
        space = [parse_param(k, v) for k, v in settings.space.items()]
    else:
        raise ZooError("tune.space: a mapping of KEY: LOW:HIGH[:log][:int]")
    for item in args.space or []:
        key, eq, spec = item.partition("=")
        if not eq or not key:
            raise ZooError(f"--space {item!r}: write KEY=LOW:HIGH[:log][:int] or KEY=off")
        space = [p for p in space if p.key != key]
        if spec.lower() not in ("off", "none"):
            space.append(parse_param(key, spec))
    if not space:
        raise ZooError("the search space is empty: give --space KEY=LOW:HIGH")
    check_keys(config, space)
    return space


def report(search, space, label: str, out: Path) -> None:
    """The ranked table, the plot, and the best configuration as a recipe."""
    from zoo.runtime.console import print_table
    from zoo.tools.tune_report import plot, table_rows, write_recipe

    trials = search.trials()
    if not trials:
        print("no trial finished: nothing to rank")
        return
    metric, mode = search.metric, search.mode
    columns, rows = table_rows(trials, space, metric, mode)
    print_table(f"{label}: {len(trials)} trials, ranked", columns, rows, right=columns[:-1], bold=[0])
    found = search.winning_config()
    x = next((p for p in space if p.key.endswith(".lr")), space[0])
    fine_space = search.studies["fine"].user_attrs.get("space")
    fine_x = next((p for p in (search.stages[1].space or []) if p.key == x.key), None) if fine_space else None
    title = f"{label}: {len(trials)} trials on {metric}"
    plot(out / "trials.png", trials, x, metric, mode, title, found[2] if found else None, fine_x)
    print(f"trials drawn: {out / 'trials.png'}")
    if found is None:
        print("no trial ran to the end: no best configuration")
        return
    config, stage, trial = found
    path = out / "best.yaml"
    epoch = trial.user_attrs.get("best_epoch")
    header = [
        f"zoo tune: the best of the search {search.name!r}: {stage} trial #{trial.number}, {metric} "
        f"{trial.value:.4f} at epoch {epoch}",
        f"reproduce it: zoo fit --config {path}",
    ]
    write_recipe(path, config, header)
    shown = ", ".join(f"{p.name} {trial.params[p.key]:.3g}" for p in space if p.key in trial.params)
    print(f"best: {stage} #{trial.number}, {metric} {trial.value:.4f} ({shown})")
    print(f"best configuration: {path}")
    print(f"reproduce it: zoo fit --config {path}")


def main(argv: list[str]) -> int:
    from recipes.tuning import Search

    args, recipe = parse(parser(), argv)
    label = recipe.label
    config = recipe_config(recipe)
    settings = settings_from(config, args)
    checkpoint = config.get("checkpoint") or {}
    metric = settings.metric or checkpoint.get("monitor") or "val/top1"
    mode = settings.mode or checkpoint.get("mode") or "max"
    if not metric.startswith("val/"):
        raise ZooError(f"--metric {metric}: a search is scored on the validation split; give a val/ metric")
    settings.coarse_epochs = settings.coarse_epochs or default_epochs(config)
    space = space_from(config, settings, args, settings.coarse_epochs)
    study = args.study or label
    out = Path(args.output or Path("runs") / "tune" / study)
    ensure_writable(out, "--output")  # before the first trial, not after the search
    storage = args.storage or str(out / "study.db")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is printed here instead
    search = Search(
        config, settings, space, out, study, storage, metric, mode, args.seed, args.keep_checkpoints
    )
    coarse, fine = search.stages
    fine_length = f"{fine.epochs} epochs" if fine.epochs else "the recipe's length"
    print(
        f"{label}: {settings.trials} trials ({coarse.trials} coarse of {coarse.epochs} epochs, {fine.trials} fine "
        f"of {fine_length}) on {metric} ({mode}); study {study!r} in {storage}"
    )
    print("searching " + ", ".join(f"{p.key} {p.spec()}" for p in space))
    devices = (config.get("trainer") or {}).get("devices")
    if devices not in (1, "1"):
        print(
            f"each trial runs on one device (the recipe's trainer.devices is {devices}; best.yaml keeps it)"
        )
    search.run()
    report(search, space, label, out)
    return 0
