"""``zoo summary MODEL``: per-layer output shapes, parameters and MACs of a model, or of one conv layer.

zoo summary resnet18                        # at the model's default input size (3×224×224)
zoo summary resnet20 --input_size 3 32 32 --depth 2
zoo summary timm/efficientnet_lite0 --num_classes 10
zoo summary vgg16 -o norm=batch -o pool_size=1 --input_size 3 32 32
zoo summary conv --filters 10 --kernel 5 --stride 1 --pad 2 --input_size 3 32 32   # the lectures' example
"""

from __future__ import annotations

import torch
import yaml
from rich.console import Console

from recipes.command_args import CommandParser, parse
from zoo.models.backbones import model_data_config
from zoo.models.registry import create_model
from zoo.runtime.console import print_table
from zoo.runtime.summary import ConvDoesNotFit, conv_arithmetic, group_layers, summarize


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def _options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --option takes KEY=VALUE (e.g. norm=layer), got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def _parser() -> CommandParser:
    parser = CommandParser("summary", __doc__)
    parser.add_argument("model", help="a zoo model, timm/<name>, or 'conv' for a single conv layer")
    parser.add_argument(
        "--input_size", nargs=3, type=int, metavar=("C", "H", "W"), help="default: the model's"
    )
    parser.add_argument(
        "--num_classes", type=int, default=None, help="classes of the head (default: the model's)"
    )
    parser.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="model option"
    )
    parser.add_argument("--depth", type=int, default=None, help="merge rows to this module-name depth")
    conv = parser.add_argument_group("a single conv layer (MODEL = conv)")
    conv.add_argument("--filters", type=int, default=10, help="K, number of filters")
    conv.add_argument("--kernel", type=int, default=3, help="F, spatial extent")
    conv.add_argument("--stride", type=int, default=1, help="S")
    conv.add_argument("--pad", type=int, default=0, help="P, zero padding")
    return parser


def main(argv: list[str]) -> int:
    args, _ = parse(_parser(), argv, recipe=False)
    console = Console(width=160)
    if args.model == "conv":
        in_size = tuple(args.input_size or (3, 32, 32))
        try:
            console.print(conv_arithmetic(in_size, args.filters, args.kernel, args.stride, args.pad))
        except ConvDoesNotFit as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            return 1
        model = torch.nn.Conv2d(in_size[0], args.filters, args.kernel, args.stride, args.pad)
    else:
        options = _options(args.option)
        if args.input_size:
            options["in_chans"] = args.input_size[0]
        try:
            with torch.device("meta"):  # shapes only: instant, and no memory for big models
                model = create_model(args.model, num_classes=args.num_classes, **options)
        except ValueError as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            return 2
        in_size = tuple(args.input_size or model_data_config(model)["input_size"])
    try:
        try:
            summary = summarize(model, in_size)
        except NotImplementedError:  # an operation without a meta kernel: run it for real on the CPU
            model = create_model(args.model, num_classes=args.num_classes, **options)
            summary = summarize(model, in_size)
    except ValueError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        return 1
    layers = group_layers(summary, args.depth) if args.depth else summary.layers
    rows = [
        (
            r.name,
            r.kind,
            _shape(r.output),
            f"{r.params:,}",
            f"{r.macs:,}",
            f"[yellow]no: {r.note}[/]" if r.note else "",
        )
        for r in layers
    ]
    columns = ("layer", "type", "output C×H×W", "params", "MACs", "stride fits?")
    print_table(
        f"{args.model} on a {_shape(in_size)} input (C×H×W)",
        columns,
        rows,
        right=("params", "MACs"),
        width=160,
    )
    console.print(
        f"input {_shape(summary.input_size)} → output {_shape(summary.output)}; parameters {summary.params:,} "
        f"(trainable {summary.trainable:,}); MACs {summary.macs:,} ({summary.macs / 1e9:.3f} G)",
        highlight=False,
    )
    if summary.misfits:
        console.print(
            f"[yellow]{len(summary.misfits)} layer(s) do not fit their input exactly: (W1 − F + 2P)/S + 1 is "
            "not an integer; torch floors it, so the filter never reaches the last row/column of the padded "
            "input.[/]",
            highlight=False,
        )
    return 0
