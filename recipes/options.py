"""The options typed on the ``zoo`` command line: a "did you mean" for an unknown one, and the ``--model.*``
ones that win over a checkpoint's settings."""

from __future__ import annotations

import difflib
import inspect
import json
import re
from importlib import import_module

from zoo.errors import did_you_mean, error_chain


def option_hint(err: BaseException, parsers: list) -> str:
    """`` (did you mean '--model.optimizer.lr'?)`` for an option the parsers do not know: an unrecognised
    ``--a.b`` among the parsers' options, an init argument among those of the class it was given to."""
    found = re.search(r"unrecognized arguments: (.*)", str(err))
    if found:
        given = [a.split("=", 1)[0] for a in found.group(1).split() if a.startswith("--")]
        options = {o for parser in parsers for o in re.findall(r"--[\w.]+", parser.format_help())}
        return next((hint for hint in (option_like(g, options) for g in given) if hint), "")
    text = "\n".join(str(e) for e in error_chain(err))
    found = re.search(r"class_path '([\w.]+)':\s+Option '(\w+)' is not accepted", text)
    if not found:
        return ""
    module, _, name = found.group(1).rpartition(".")
    try:
        cls = getattr(import_module(module), name)
    except (ImportError, AttributeError):
        return ""
    params = {
        p for klass in cls.__mro__ if "__init__" in vars(klass) for p in inspect.signature(klass).parameters
    }
    return did_you_mean(found.group(2), params - {"self", "args", "kwargs"})


def option_like(given: str, options: set[str]) -> str:
    """The "did you mean" of an unknown option among ``options``: a misspelt group keeps the rest of the key
    (``--model.optimzer.lr`` → ``--model.optimizer.lr``: the help lists ``--model.optimizer`` alone), else the
    options of the same group whose last part is closest (``--trainer.max_epochz`` → ``--trainer.max_epochs``)."""
    parts = given.split(".")
    for k in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:k])
        close = difflib.get_close_matches(head, options, n=1, cutoff=0.8)
        if close and close[0] != head:
            return f" (did you mean {'.'.join([close[0], *parts[k:]])!r}?)"
    group = given.rpartition(".")[0]
    siblings = {o.rpartition(".")[2]: o for o in options if o.rpartition(".")[0] == group}
    close = difflib.get_close_matches(given.rpartition(".")[2], siblings, n=2)
    return did_you_mean(given, [siblings[c] for c in close])


def typed_model_keys(args: list[str]) -> list[str]:
    """The ``model`` options given on the command line ``args`` (``--model.optimizer.lr 0.05`` →
    ``model.optimizer.lr``; ``--model '{...}'`` → ``model``), in their order."""
    keys = [
        arg[2:].split("=", 1)[0]
        for arg in args
        if arg == "--model" or arg.startswith(("--model.", "--model="))
    ]
    return list(dict.fromkeys(keys))


def shown(value) -> str:
    """A config value as the command line would give it (a section as JSON)."""
    value = value.as_dict() if hasattr(value, "as_dict") else value
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)
