"""``zoo lr-find --recipe NAME [overrides]``: an lr range test on a recipe, its plot, and the lr to paste.

The recipe is built by the zoo's CLI as for ``zoo fit`` (overrides work the same). Its trainer keeps the devices,
precision, accumulation, the fine-tuning callback (which freezes layers and fits the linear probe) and stochastic
depth (the sweep trains the network as the run would), and drops what a sweep does not use: loggers, checkpoints,
lr schedules, reports, validation. :class:`zoo.tools.lr_range.RangeTest` runs the sweep; the plot and a CSV of every
step go to a run folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

from recipes.command_args import CommandParser, parse, positive
from zoo.errors import ZooError, ensure_writable

EPILOG = """examples:
  zoo lr-find --recipe digits
  zoo lr-find --recipe finetune --data.root photos      # from the linear probe's head, backbone at 0.1x
  zoo lr-find --recipe digits --model.optimizer.name adam --min_lr 1e-6 --max_lr 1
Any other option overrides the recipe as in `zoo fit`. The swept lr is model.optimizer.lr (the head's):
every param group follows at its own multiple of it (model.backbone_lr_scale, the linear scaling rule)."""


def run_folder(root: Path) -> Path:
    """``root/version_N``, N one more than the highest there."""
    taken = [int(p.name.split("_")[1]) for p in root.glob("version_*") if p.name.split("_")[1].isdigit()]
    return root / f"version_{max(taken, default=-1) + 1}"


def parser() -> CommandParser:
    parser = CommandParser(
        "lr-find",
        "LR range test: train a few steps with the lr rising exponentially, plot the loss against the lr, and "
        "suggest the lr where the loss falls fastest.",
        EPILOG,
    )
    parser.add_argument("--recipe", help="a shipped recipe (or give --config FILE)")
    parser.add_argument("--min_lr", type=positive, default=1e-6, help="first lr of the sweep (default 1e-6)")
    parser.add_argument("--max_lr", type=positive, default=10.0, help="last lr of the sweep (default 10)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of the sweep (default 100)")
    parser.add_argument(
        "--output", help="folder for the plot and CSV (default: <root dir>/lr_find/version_N)"
    )
    return parser


def prepare(trainer, test) -> None:
    """The recipe's trainer stripped to what a sweep needs: its fine-tuning and stochastic depth, then the range
    test."""
    from callbacks.finetuning import FineTuning
    from callbacks.stochastic_depth import StochasticDepth

    kept = (FineTuning, StochasticDepth)
    trainer.callbacks = [c for c in trainer.callbacks if isinstance(c, kept)] + [test]
    trainer.loggers = []
    trainer.num_sanity_val_steps = 0
    trainer.check_val_every_n_epoch = 10**9  # no validation: the sweep reads the training loss


def write_csv(path: Path, results: dict) -> None:
    """One row per step: the swept lr, the loss (smoothed and raw), and the lr each param group was given."""
    names = list(dict.fromkeys(name for groups in results["groups"] for name in groups))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss", "raw_loss", *(f"lr[{n}]" for n in names)])
        rows = zip(results["lr"], results["loss"], results["raw"], results["groups"])
        for step, (lr, loss, raw, groups) in enumerate(rows):
            writer.writerow(
                [step, repr(lr), repr(loss), repr(raw), *(repr(groups.get(n, "")) for n in names)]
            )


def describe(label: str, test, args, probed: bool = False) -> str:
    """One line: where the sweep ran (``probed``: after a linear probe fitted the head), how far, and each param
    group's multiple of the swept lr."""
    results = test.results
    first, lr0 = results["groups"][0], results["lr"][0]
    groups = ", ".join(f"{n} ×{lr / lr0:.3g}" for n, lr in first.items() if not n.endswith("/no_decay"))
    where = "after the linear probe" if probed else "from the start"
    return (
        f"{label}: lr range test {where}: {len(results['lr'])} steps of lr {args.min_lr:g} → {args.max_lr:g} "
        f"(param groups: {groups})"
    )


def main(argv: list[str]) -> int:
    from callbacks.finetuning import FineTuning
    from callbacks.lr_schedule import LRSchedule
    from zoo.tools.lr_range import RangeTest, plot

    args, recipe = parse(parser(), argv)
    test = RangeTest(args.min_lr, args.max_lr, args.steps, schedules=(LRSchedule,))  # options checked first
    cli = recipe.build()
    trainer, model = cli.trainer, cli.model
    label = recipe.label
    out = Path(args.output) if args.output else run_folder(Path(trainer.default_root_dir) / "lr_find")
    ensure_writable(out, "--output")  # before the sweep, not after it
    prepare(trainer, test)
    trainer.fit(model, datamodule=cli.datamodule)
    if not test.results or not test.results["lr"]:
        raise ZooError(
            "the run takes no optimizer step to test (finetune.strategy linear, or auto choosing it: the linear "
            "probe is the whole training); for fine-tuning's lr give --finetune.strategy freeze_unfreeze or full"
        )

    reading = test.reading()
    probed = any(isinstance(c, FineTuning) and c.probed_now for c in trainer.callbacks)
    print(describe(label, test, args, probed))
    recipe_lr = model.optimizer_config.resolved().get("lr")
    results = test.results
    plot(out / "lr_find.png", results["lr"], results["loss"], reading, f"{label}: lr range test", recipe_lr)
    write_csv(out / "lr_find.csv", results)
    if reading.lr is None:
        print(f"no suggestion: {reading.why}")
    else:
        print(f"suggested lr: {reading.lr:.3g}")
        print(f"  --model.optimizer.lr {reading.lr:.3g}")
    print(f"plot: {out / 'lr_find.png'} (every step: {out / 'lr_find.csv'})")
    return 0
