"""``zoo export --recipe NAME --ckpt_path CKPT --format onnx|pt2|timm --output PATH``: a checkpoint for deployment.

The network in eval mode, as ONNX or a ``torch.export`` program (a dynamic batch dimension), or as a timm hub
folder (config.json, model.safetensors and a model card filled from the run) that ``timm.create_model
("local-dir:DIR", pretrained=True)`` loads, carrying the preprocessing and class names the checkpoint was trained
with (see :mod:`zoo.tools.export`). The export is checked: the exported model (for a folder: the network rebuilt from it,
as its users will) runs on a few real inputs (the recipe's validation images, through the checkpoint's eval
preprocessing; random inputs when the recipe's data is not at hand) and the largest difference from the
checkpoint's own outputs is printed.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path

from recipes.command_args import CommandParser, RecipeArgs, parse
from zoo.protocols import ClassNames, SplitDatasets

EPILOG = """examples:
  zoo export --recipe digits --ckpt_path runs/digits/version_0/checkpoints/last.ckpt --format onnx --output digits.onnx
  zoo export --recipe finetune --data.root photos --ckpt_path best.ckpt --format pt2 --output model.pt2
  zoo export --recipe finetune --data.root photos --ckpt_path best.ckpt --format timm --output my-model
Any other option overrides the recipe as in `zoo fit` (e.g. --data.root DIR for the check's real images)."""


def real_inputs(recipe: RecipeArgs, config: dict, count: int) -> tuple[object, str, list[str] | None]:
    """``count`` inputs from the recipe's data (validation split first), where they came from, and the data's
    class names; (None, why, None) when the recipe's data cannot be built. Image data modules take the
    checkpoint's eval preprocessing."""
    import numpy as np
    import torch

    from zoo.data.transforms import eval_transform

    try:
        cli = recipe.build("--trainer.logger", "false", "--model.pretrained", "false")
        datamodule = cli.datamodule
        datamodule.setup("fit")
        splits = datamodule.splits if isinstance(datamodule, SplitDatasets) else {}
        name = next((n for n in ("val", "test", "train") if n in splits), None)
        if config.get("mean") and name is not None and hasattr(splits[name], "transform"):
            dataset = copy.copy(splits[name])  # the same images through the checkpoint's eval transform
            dataset.transform = eval_transform(config, normalize=True)  # (x / 255 − μ)/σ, as the model saw it
            picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
            x = torch.stack([dataset[int(i)][0] for i in picks])
        else:
            name = "val"
            # a batch as the model sees it: the hook normalises the batches of loaders that deliver uint8
            batch = datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
            x = batch[0][:count]
    except (Exception, SystemExit) as err:  # any reason the data is not at hand: check on random inputs
        reason = err.__cause__ or err  # jsonargparse wraps the data module's own message
        return None, (str(reason).splitlines() or [type(reason).__name__])[0], None
    names = datamodule.class_names if isinstance(datamodule, ClassNames) else None
    return x.float(), f"{len(x)} {name} images of the recipe's data", names


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def main(argv: list[str]) -> int:
    parser = CommandParser(
        "export",
        "Export a checkpoint as ONNX, a torch.export program or a timm hub folder, with its preprocessing and "
        "classes.",
        EPILOG,
    )
    parser.add_argument(
        "--recipe", help="the shipped recipe the checkpoint was trained with (or --config FILE)"
    )
    parser.add_argument("--ckpt_path", required=True, help="the checkpoint to export")
    parser.add_argument(
        "--format", default="onnx", help="onnx (for onnxruntime), pt2 (torch.export) or timm (a hub folder)"
    )
    parser.add_argument(
        "--output",
        help="file to write, a folder for timm (default: the checkpoint's name, with .onnx or .pt2 for a file)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_switch("--weights_only", "false: trust pickled objects in the checkpoint", default=True)
    parser.add_argument("--check_inputs", type=int, default=8, help="inputs the exported model is checked on")
    parser.add_argument("--atol", type=float, default=1e-3, help="largest difference accepted (logits)")
    args, recipe = parse(parser, argv, required=False)
    try:
        return run(args, recipe)
    except Exception as err:
        from zoo.tools.export import ExportError

        debug = os.environ.get("ZOO_DEBUG", "").lower() in ("1", "true", "yes")  # `zoo --debug` sets it
        if debug or not isinstance(err, (ExportError, FileNotFoundError)):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args, recipe: RecipeArgs | None) -> int:
    import torch

    from zoo.tools import export

    fmt = export.check_format(args.format)
    if args.opset is not None and fmt != "onnx":
        raise export.ExportError("--opset is for --format onnx")
    suffix = "" if fmt == "timm" else f".{fmt}"
    output = export.check_output(args.output or Path(args.ckpt_path).with_suffix(suffix).name, fmt == "timm")
    ckpt = export.load_checkpoint(args.ckpt_path, args.weights_only)
    net = export.network(ckpt, args.ckpt_path)
    config = export.preprocessing(ckpt)

    x, where, names = None, "no recipe given (--recipe NAME or --config FILE)", None
    if recipe is not None:
        x, where, names = real_inputs(recipe, config, args.check_inputs)
    size = config.get("input_size") or (list(x.shape[1:]) if x is not None else None)
    if size is None:
        raise export.ExportError(
            f"the checkpoint saved no input size and the recipe's data is not at hand ({where}); "
            "give the recipe and its data (--recipe NAME --data.root DIR) so the input size is known"
        )
    if x is None:
        print(f"Checking on random inputs: the recipe's data is not at hand ({where})")
        x, where = torch.randn(args.check_inputs, *size), f"{args.check_inputs} random inputs"
    meta = export.metadata(ckpt, size, names)
    if "mean" not in meta:
        print(
            "Note: the checkpoint saved no preprocessing (mean/std); the metadata gives the input size only"
        )
    if fmt == "timm":
        return write_hub_folder(args, ckpt, net, output, meta, x, where)

    path = export.export(net, fmt, output, meta, args.opset or export.DEFAULT_OPSET)
    worst = export.max_difference(net, path, x)
    shape = "×".join(str(s) for s in size)
    what = f"ONNX opset {args.opset or export.DEFAULT_OPSET}" if fmt == "onnx" else "torch.export program"
    print(f"Exported {meta.get('arch', 'the model')} ({shape} → {meta['num_classes']} classes) to {path}")
    print(f"  {what}, {_size(path.stat().st_size)}, dynamic batch dimension")
    if fmt == "pt2":
        print(f"  metadata: {export.metadata_path(path)}")
    print(f"  checked on {where}: largest |logit difference| from the checkpoint {worst:.2e}")
    return _within(worst, args.atol)


def _within(worst: float, atol: float) -> int:
    """The exit code of a check whose largest logit difference is ``worst``: 0 within ``atol``, else 1, said."""
    if worst <= atol:
        return 0
    print(f"error: the exported model differs from the checkpoint by {worst:.2e} > --atol {atol}")
    return 1


def run_command(run: Path | None) -> tuple[str | None, list[str] | None]:
    """The recipe and the command of the run that wrote the checkpoint (its ``command.txt``), with the shipped
    recipe's file written back as ``--recipe NAME``, as the user typed it."""
    from recipes.catalog import CONFIG_DIR
    from zoo.tools.model_card import run_command as recorded

    command = recorded(run) if run is not None else None
    if not command:
        return None, None
    out, recipe = [], None
    for i, arg in enumerate(command):
        if i and command[i - 1] == "--config" and Path(arg).parent.resolve() == CONFIG_DIR.resolve():
            recipe = Path(arg).stem
            out[-1:] = ["--recipe", recipe]
        else:
            out.append(arg)
    return recipe, out


def write_hub_folder(args, ckpt: dict, net, output: Path, meta: dict, x, where: str) -> int:
    """``--format timm``: the folder with its model card, written beside ``output`` and moved in once the network
    rebuilt from it (plain timm, or ``zoo.create_model`` for the zoo's networks) gives the checkpoint's logits."""
    from zoo.tools import export, hub_folder, model_card

    hparams = ckpt.get("hyper_parameters") or {}
    arch = str(hparams["arch"])
    plain_timm = hub_folder.timm_builds(arch, export.model_args(hparams))
    recipe, command = run_command(model_card.run_folder(args.ckpt_path))
    card = model_card.model_card(
        output.resolve().name,
        arch.removeprefix("timm/"),
        plain_timm,
        ckpt,
        args.ckpt_path,
        {k: v for k, v in meta.items() if k in export.PREPROCESS_KEYS},
        meta.get("class_names"),
        recipe or args.recipe,
        command,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
        export.export_hub_folder(net, hparams, tmp, meta, card)
        try:
            worst = export.max_difference(net, tmp, x)
        except Exception as err:  # noqa: BLE001 - whatever stops the rebuild, the folder would not load
            reason = (str(err).splitlines() or [type(err).__name__])[0]
            raise export.ExportError(
                f"the folder written for {arch} does not rebuild its network ({reason}); nothing was written"
            ) from err
        output.mkdir(exist_ok=True)
        umask = os.umask(0)
        os.umask(umask)
        for file in Path(tmp).iterdir():
            file.chmod(0o666 & ~umask)  # as a file written in place would be (safetensors writes 0600)
            os.replace(file, output / file.name)
    loader = (
        f'timm.create_model("local-dir:{output}", pretrained=True)'
        if plain_timm
        else f'zoo.create_model("local-dir:{output}")'
    )
    shape = "×".join(str(s) for s in meta["input_size"])
    files = ", ".join(f"{f.name} {_size(f.stat().st_size)}" for f in sorted(output.iterdir()) if f.is_file())
    print(f"Exported {arch} ({shape} → {meta['num_classes']} classes) to {output}/")
    print(f"  timm hub folder: {files}")
    if not plain_timm:
        print(f"  a lightning-zoo network: plain timm cannot build it; load it with {loader}")
    print(f"  checked on {where}: {loader} gives logits within {worst:.2e} of the checkpoint's")
    return _within(worst, args.atol)
