"""``zoo schedule --recipe NAME [overrides] [--output PNG]``: draw a recipe's lr curve without training.

The recipe is parsed and instantiated by the same ``ZooCLI`` as ``zoo fit`` (so overrides work the same),
the optimizer is built by the same ``build_optimizer`` over ``ImageClassifier.param_groups()``, and the
trainer's own schedule callbacks are stepped through the run by the code that sets the lr in training.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from callbacks.lr_schedule import schedules_of, simulate
from recipes.command_args import CommandParser, RecipeArgs, parse
from zoo.errors import ZooError
from zoo.training.optim import build_optimizer, global_batch_size

EPILOG = """Any other option overrides the recipe as in `zoo fit`, e.g.
  zoo schedule --recipe digits --trainer.max_epochs 90 --data.batch_size 256 --output lr.png"""


def run_length(trainer, datamodule) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps), counted as Lightning's ``estimated_stepping_batches``
    counts them (per-rank batches of a DistributedSampler, ``limit_train_batches``, accumulation, max_steps)."""
    loader = datamodule.train_dataloader()
    world = trainer.num_devices * trainer.num_nodes
    if world > 1:
        per_rank = math.ceil(len(loader.dataset) / world)
        batches = (
            per_rank // loader.batch_size if loader.drop_last else math.ceil(per_rank / loader.batch_size)
        )
    else:
        batches = len(loader)
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif limit is not None:
        batches = int(batches * limit)
    steps_per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
    if trainer.max_epochs in (None, -1) and trainer.max_steps == -1:
        raise ZooError("the run has neither trainer.max_epochs nor trainer.max_steps: no end to draw")
    total = steps_per_epoch * max(trainer.max_epochs, 1) if trainer.max_epochs not in (None, -1) else math.inf
    if trainer.max_steps != -1:
        total = min(total, trainer.max_steps)
    return steps_per_epoch, int(total)


def key_points(schedules, steps_per_epoch: int, total: int) -> list[tuple[int, str]]:
    """Start, each schedule's breakpoints (end of warmup, each decay), and the last step."""
    points = {0: "start"}
    for s in schedules:
        for t, label in s.breakpoints():
            step = math.ceil(t * steps_per_epoch) if s.unit == "epoch" else math.ceil(t)
            if 0 < step < total:
                points[step] = f"{points[step]}; {label}" if step in points else label
    points[total - 1] = f"{points[total - 1]}; end" if total - 1 in points else "end"
    return sorted(points.items())


def draw(
    path: Path,
    times,
    curves: dict[str, list[float]],
    points,
    title: str,
    log: bool,
    legend="param group",
    unit="epoch",
):
    """Plot one lr curve per entry of ``curves`` against ``times`` (in ``unit``s), dotted lines at ``points``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for name, lrs in curves.items():
        ax.plot(times, lrs, label=name, linewidth=1.6)
    for x in points:
        ax.axvline(x, color="0.8", linewidth=0.8, linestyle=":", zorder=0)
    ax.set(xlabel=unit, ylabel="learning rate", title=title)
    if log:
        ax.set_yscale("log")
    if len(curves) > 1:
        ax.legend(title=legend)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _world(trainer) -> int:
    """Devices × nodes of a trainer config (``auto`` counts as 1)."""
    devices = trainer.get("devices") if trainer is not None else 1
    count = len(devices) if isinstance(devices, (list, tuple)) else devices if isinstance(devices, int) else 1
    return max(count, 1) * int((trainer.get("num_nodes") if trainer is not None else 1) or 1)


def build(recipe: RecipeArgs):
    """Instantiate the recipe's trainer, model and data module with the zoo's CLI, without running it; when
    the recipe's data cannot be built here (no ImageNet on this machine), a :class:`StandInData` of the data
    set's size takes its place and ``cli.missing_data`` says why."""
    from recipes.lightning_cli import ZooCLI
    from recipes.stand_in import stand_in_config

    class ScheduleCLI(ZooCLI):
        missing_data: str | None = None

        def instantiate_classes(self):
            try:
                super().instantiate_classes()
            except Exception as err:  # noqa: BLE001 - tried once more without the data, else raised as it was
                data = self.config.get("data")
                if data is None or not data.get("class_path"):
                    raise
                self.config["data"] = stand_in_config(data, _world(self.config.get("trainer")))
                try:
                    super().instantiate_classes()
                except Exception:  # noqa: BLE001 - not the data's fault: the first error is the one to show
                    raise err from None
                self.missing_data = str(_innermost(err)).splitlines()[0]

    return recipe.build(cli_class=ScheduleCLI)


def _innermost(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def data_at_hand(cli):
    """The recipe's data module set up for ``fit``, or a :class:`StandInData` when its files are not here."""
    from recipes.stand_in import StandInData, stand_in_config

    datamodule = cli.datamodule
    if isinstance(datamodule, StandInData):
        return datamodule
    try:
        datamodule.setup("fit")
        datamodule.train_dataloader()
        return datamodule
    except (ZooError, OSError, RuntimeError, ValueError) as err:  # e.g. CIFAR not downloaded, offline
        config = stand_in_config(cli.config["data"], cli.trainer.num_devices * cli.trainer.num_nodes)
        cli.missing_data = str(err).splitlines()[0]
        return StandInData(**dict(config.init_args))


def say_where_steps_come_from(cli, datamodule, trainer) -> None:
    from recipes.stand_in import NOMINAL_STEPS_PER_EPOCH, StandInData

    if not isinstance(datamodule, StandInData):
        return
    world = trainer.num_devices * trainer.num_nodes * trainer.accumulate_grad_batches
    print(f"no data here ({cli.missing_data or datamodule.data}):", end=" ")
    if datamodule.known:
        print(
            f"steps counted from {datamodule.data}'s {datamodule.train_images:,} training images in global "
            f"batches of {datamodule.batch_size * world:,} ({datamodule.batch_size} × {world})"
        )
    else:
        print(
            f"the size of {datamodule.data} is unknown: drawn against epochs, {NOMINAL_STEPS_PER_EPOCH} steps each"
        )


def main(argv: list[str]) -> int:
    parser = CommandParser(
        "schedule",
        "Draw the learning rate of every param group over a recipe's whole run (no training).",
        EPILOG,
    )
    parser.add_argument("--recipe", help="a shipped recipe (or give --config FILE)")
    parser.add_argument("--output", help="PNG to write (default: lr_schedule_<recipe>.png)")
    parser.add_argument("--csv", help="also write the lr of every step to this CSV")
    parser.add_switch("--log", "logarithmic lr axis")
    args, recipe = parse(parser, argv)

    cli = build(recipe)
    trainer, model = cli.trainer, cli.model
    datamodule = data_at_hand(cli)
    say_where_steps_come_from(cli, datamodule, trainer)
    steps_per_epoch, total = run_length(trainer, datamodule)
    config = model.optimizer_config
    global_batch = global_batch_size(trainer, datamodule) if config.reference_batch_size else None
    optimizer = build_optimizer(model.param_groups(), config, global_batch=global_batch)
    schedules = schedules_of(trainer)
    lrs = simulate(schedules, optimizer, steps_per_epoch, total)

    names = [g.get("name", f"pg{i}") for i, g in enumerate(optimizer.param_groups)]
    columns = {}  # one curve per group, the weight-decay halves of a group being equal
    for i, name in enumerate(names):
        columns.setdefault(name.removesuffix("/no_decay"), i)
    epochs = [s / steps_per_epoch for s in range(total)]
    points = key_points(schedules, steps_per_epoch, total)

    label = recipe.label
    options = {**config.resolved(), "lr": optimizer.param_groups[0]["base_lr"] if lrs else None}
    print(f"{label}: optimizer {config.name} (" + ", ".join(f"{k} {v}" for k, v in options.items()) + ")")
    print(f"{total} optimizer steps = {total / steps_per_epoch:g} epochs × {steps_per_epoch} steps; "
          f"schedules: {', '.join(type(s).__name__ for s in schedules) or 'none (constant lr)'}")  # fmt: skip
    header = f"{'step':>8} {'epoch':>9}  " + "  ".join(f"{'lr[' + n + ']':>14}" for n in columns) + "  point"
    print(header)
    for step, what in points:
        row = "  ".join(f"{lrs[step][i]:>14.6g}" for i in columns.values())
        print(f"{step:>8} {step / steps_per_epoch:>9.3f}  {row}  {what}")

    out = Path(args.output or f"lr_schedule_{label}.png")
    curves = {n: [lr[i] for lr in lrs] for n, i in columns.items()}
    title = f"{label}: {config.name}, " + (" × ".join(type(s).__name__ for s in schedules) or "constant lr")
    # a recipe whose schedules all count steps (He et al.'s iterations) is drawn against steps
    unit = "step" if schedules and all(s.unit == "step" for s in schedules) else "epoch"
    per = 1 if unit == "step" else steps_per_epoch
    times = [s / per for s in range(total)]
    draw(out, times, curves, [s / per for s, _ in points[1:-1]], title, args.log, unit=unit)
    print(f"wrote {out}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "epoch", *names])
            for step, row in enumerate(lrs):
                writer.writerow([step, repr(epochs[step]), *map(repr, row)])
        print(f"wrote {args.csv}")
    return 0
