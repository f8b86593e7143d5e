"""What the source tests share: the module an ``import`` statement names, relative imports resolved."""

from __future__ import annotations

import ast


def imported_module(node: ast.ImportFrom, package: str) -> str:
    """The absolute name of the module in ``from MODULE import ...`` written in ``package`` (``from . import x``
    in ``zoo.models`` is ``zoo.models``; ``from ..errors import E`` there is ``zoo.errors``)."""
    base = node.module or ""
    if not node.level:
        return base
    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*anchor, base] if base else anchor)
