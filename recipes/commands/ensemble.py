"""``zoo ensemble --recipe NAME --ckpt A.ckpt B.ckpt ...``: score each checkpoint and the average of their
softmax outputs on the recipe's validation (and test) split, print a table, and optionally write predictions.

The recipe (with any ``--section.key value`` overrides, as in ``zoo fit``) gives the data and the model every
checkpoint must fit; ``--own_arch`` rebuilds each member from its checkpoint instead (an ensemble of
different architectures). Checkpoints load with ``torch.load(weights_only=True)`` unless ``--weights_only false``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from recipes.command_args import CommandParser, RecipeArgs, parse
from zoo.protocols import ClassNames, SplitData

EPILOG = """examples:
  zoo ensemble --recipe digits --ckpt runs/digits/version_0/checkpoints/last.ckpt runs/digits/version_1/checkpoints/last.ckpt
  zoo ensemble --recipe digits --ckpt runs/digits_snapshot/version_0/snapshots/*.ckpt --last 3 --json scores.json
  zoo ensemble --recipe digits --ckpt a.ckpt b.ckpt --predictions ensemble.csv"""


def build(recipe: RecipeArgs):
    """The recipe's model and data module, instantiated by the zoo's CLI without running anything."""
    cli = recipe.build("--trainer.logger", "false")
    return cli.model, cli.datamodule


def split_loaders(datamodule, splits: list[str]) -> dict:
    """``{split: loader}`` for the requested splits the data module has (a :class:`SplitData` says which)."""
    loaders = {}
    for split in splits:
        datamodule.setup("fit" if split == "val" else split)
        if isinstance(datamodule, SplitData) and not datamodule.has_split(split):
            continue
        try:
            loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
        except (NotImplementedError, KeyError, AttributeError, TypeError):
            loader = None
        if loader is not None and len(loader) > 0:
            loaders[split] = loader
    return loaders


def main(argv: list[str]) -> int:
    from zoo.errors import CheckpointError, ZooError
    from zoo.tools.ensemble import (
        average,
        evaluate,
        load_member,
        predict_probs,
        print_table,
        write_predictions,
    )

    parser = CommandParser(
        "ensemble",
        "Evaluate the averaged softmax of several checkpoints (independent models or snapshots).",
        EPILOG,
    )
    parser.add_argument(
        "--recipe", help="the shipped recipe the checkpoints were trained with (or --config FILE)"
    )
    parser.add_argument("--ckpt", nargs="+", required=True, help="checkpoints, the ensemble's members")
    parser.add_argument("--split", nargs="+", default=["val", "test"], choices=["val", "test"])
    parser.add_argument("--last", type=int, help="also score the ensemble of the last K checkpoints")
    parser.add_switch("--own_arch", "build each member from its checkpoint")
    parser.add_switch("--weights_only", "false: trust pickled objects in checkpoints", default=True)
    parser.add_argument("--predictions", help="write the ensemble's top-k on the predict split to this CSV")
    parser.add_argument("--top_k", type=int, default=3, help="classes per row of --predictions")
    parser.add_argument("--json", help="also write the scores to this JSON file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args, recipe = parse(parser, argv)
    if args.last is not None and not 1 <= args.last <= len(args.ckpt):
        raise ZooError(f"--last {args.last} must be between 1 and the {len(args.ckpt)} checkpoints")

    missing = [p for p in args.ckpt if not Path(p).is_file()]
    if missing:
        raise ZooError(f"checkpoint(s) not found: {', '.join(missing)}")
    template, datamodule = build(recipe)
    try:
        members = {
            p: load_member(p, None if args.own_arch else template, args.weights_only) for p in args.ckpt
        }
    except CheckpointError as err:
        hint = "" if args.own_arch or "does not fit" not in str(err) else " (or --own_arch)"
        raise CheckpointError(f"{err}{hint}") from None
    data_classes = datamodule.num_classes  # every data module of the zoo's CLI has it (linked to the model)
    for path, model in members.items():
        classes = model.hparams.get("num_classes")
        if classes != data_classes:
            raise ZooError(f"{path} has {classes} classes, the recipe's data {data_classes}")

    results, scores = {}, {}
    for split, loader in split_loaders(datamodule, args.split).items():
        probs, target = {}, None
        for path, model in members.items():
            probs[path], target = predict_probs(model, model_ready(datamodule, loader), args.device)
        results[split] = evaluate(probs, target, args.last)
    if not results:
        raise ZooError(f"the recipe's data has none of the splits {', '.join(args.split)}")
    print_table(results, title=f"Ensemble of {len(members)} checkpoints")
    for split, rows in results.items():
        for row, s in rows.items():
            scores.setdefault(row, {})[split] = s
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(scores, indent=2) + "\n")
        print(f"Wrote the scores to {args.json}")
    if args.predictions:
        datamodule.setup("predict")
        loader = datamodule.predict_dataloader()
        outputs = [predict_probs(m, model_ready(datamodule, loader), args.device) for m in members.values()]
        names = datamodule.class_names if isinstance(datamodule, ClassNames) else None
        out = write_predictions(
            args.predictions, average([p for p, _ in outputs]), outputs[0][1], names, args.top_k
        )
        print(f"Wrote {len(outputs[0][1])} ensemble predictions to {out}")
    return 0


def model_ready(datamodule, loader):
    """The loader's batches as the model sees them in training: through the data module's transfer hook
    (the image modules send uint8 images and normalise them there)."""
    for batch in loader:
        yield datamodule.on_after_batch_transfer(batch, 0)
