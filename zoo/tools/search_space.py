"""A search space over a recipe's options: each option a dotted key of the recipe and a range, linear or log.

A key is the option's path in the recipe as ``zoo fit`` overrides it (``model.optimizer.lr``, ``model.drop_rate``,
``finetune.warmup``; ``data.batch_size`` reaches the data module's ``init_args``), and a callback of
``trainer.callbacks`` is reached by its class name (``trainer.callbacks.LinearWarmup.warmup``). A range is written
``LOW:HIGH`` with ``:log`` (sampled uniformly in log space, for lr and weight decay) and/or ``:int`` after it, in a
recipe's ``tune.space`` or on the command line (``--space model.optimizer.lr=1e-3:1:log``).

Written here because Optuna samples a range but knows nothing of a recipe's nested ``class_path``/``init_args``
layout or of narrowing a range around a result: the coarse-to-fine search of CS231n's "Training Neural Networks,
Part 1" (Lecture 6, 2017: short runs over wide log-scaled ranges, then longer runs around the best), over ranges
sampled at random rather than on a grid (Bergstra and Bengio 2012, "Random Search for Hyper-Parameter
Optimization"). Neither is in the four lectures of docs/notes.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from zoo.errors import ZooError

WARMUP_CALLBACK = "callbacks.LinearWarmup"


@dataclass(frozen=True)
class Param:
    """One option searched over [low, high]: uniformly, or log-uniformly (log U(low, high)) with ``log``."""

    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ZooError(f"search space {self.key}: need LOW < HIGH, got {self.low:g}:{self.high:g}")
        if self.log and self.low <= 0:
            raise ZooError(f"search space {self.key}: a log range needs LOW > 0, got {self.low:g}")

    @property
    def name(self) -> str:
        """The short name shown in tables: the key's last part."""
        return self.key.rsplit(".", 1)[-1]

    def suggest(self, trial) -> float | int:
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def narrowed(self, best: float, share: float = 0.25) -> Param:
        """[best − w, best + w] ∩ [low, high], w = ``share`` of the range's width on its own scale (log: decades)."""
        scale = math.log10 if self.log else float
        unscale = (lambda v: 10**v) if self.log else float
        lo, hi, at = scale(self.low), scale(self.high), scale(best)
        width = share * (hi - lo)
        low, high = unscale(max(lo, at - width)), unscale(min(hi, at + width))
        if self.integer:
            low, high = math.floor(low), math.ceil(high)
        return replace(self, low=low, high=high) if low < high else self

    def spec(self, digits: int = 6) -> str:
        """``LOW:HIGH[:log][:int]``, the bounds to ``digits`` significant digits."""
        bounds = f"{self.low:.{digits}g}:{self.high:.{digits}g}"
        return bounds + (":log" if self.log else "") + (":int" if self.integer else "")


def parse_param(key: str, spec: Any) -> Param:
    """``LOW:HIGH[:log][:int]`` (a string), ``[LOW, HIGH, "log"]`` (a list) or ``{low, high, log, int}``."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"low", "high", "log", "int"}
        if unknown or not {"low", "high"} <= set(spec):
            raise ZooError(f"search space {key}: give low and high (and log, int), not {sorted(spec)}")
        parts = [spec["low"], spec["high"]] + [f for f in ("log", "int") if spec.get(f)]
    elif isinstance(spec, (list, tuple)):
        parts = list(spec)
    else:
        parts = str(spec).split(":")
    try:
        low, high = float(parts[0]), float(parts[1])
    except (IndexError, TypeError, ValueError):
        raise ZooError(f"search space {key}={spec!r}: write LOW:HIGH, e.g. {key}=0.001:1:log") from None
    flags = {str(f).lower() for f in parts[2:]}
    if flags - {"log", "int"}:
        raise ZooError(f"search space {key}={spec!r}: after LOW:HIGH only :log and :int are known")
    return Param(key, low, high, log="log" in flags, integer="int" in flags)


def param_dict(space: list[Param]) -> list[dict]:
    return [asdict(p) for p in space]


def from_dicts(rows: list[dict]) -> list[Param]:
    return [Param(**row) for row in rows]


# --- the recipe's config ------------------------------------------------------------------------------------------


def _options(node: dict, part: str) -> dict:
    """Where ``part`` lives in ``node``: a class's own options are under its ``init_args``."""
    if "class_path" in node and part not in ("class_path", "init_args"):
        if node.get("init_args") is None:
            node["init_args"] = {}
        return node["init_args"]
    return node


def _walk(config: dict, key: str, create: bool) -> tuple[dict, str]:
    """The mapping that holds ``key``'s last part, and that part. A list (``trainer.callbacks``) is entered by a
    class name; with ``create``, a ``LinearWarmup`` the list lacks is added to it."""
    *path, last = key.split(".")
    node: Any = config
    for part in path:
        if isinstance(node, list):
            found = [
                c
                for c in node
                if isinstance(c, dict) and str(c.get("class_path", "")).rsplit(".", 1)[-1] == part
            ]
            if not found and create and part == WARMUP_CALLBACK.rsplit(".", 1)[-1]:
                node.append({"class_path": WARMUP_CALLBACK, "init_args": {}})
                found = node[-1:]
            if not found:
                raise ZooError(f"search space {key}: the recipe has no {part} there")
            node = found[0]
        elif isinstance(node, dict) and _options(node, part).get(part) is not None:
            node = _options(node, part)[part]
        elif isinstance(node, dict) and part == "callbacks" and create:  # a recipe without callbacks
            holder = _options(node, part)
            holder["callbacks"] = holder.get("callbacks") or []
            node = holder["callbacks"]
        else:
            raise ZooError(f"search space {key}: {part!r} is not an option of the recipe")
    if not isinstance(node, dict):
        raise ZooError(f"search space {key}: {last!r} is not an option of the recipe")
    return _options(node, last), last


def get(config: dict, key: str) -> Any:
    """The value at ``key`` in ``config`` (see the module's doc for the keys); an error if it has none."""
    node, last = _walk(config, key, create=False)
    if last not in node:
        raise ZooError(f"search space {key}: {last!r} is not an option of the recipe")
    return node[last]


def put(config: dict, key: str, value: Any) -> None:
    """Set ``key`` in ``config`` in place; a ``trainer.callbacks.LinearWarmup`` the recipe lacks is added."""
    node, last = _walk(config, key, create=True)
    node[last] = value


def check_keys(config: dict, space: list[Param]) -> None:
    """Every key of ``space`` names an option of ``config`` (a missing ``LinearWarmup`` may be added)."""
    for param in space:
        if param.key.startswith("trainer.callbacks.LinearWarmup."):
            continue
        get(config, param.key)


def default_space(config: dict, run_epochs: int | None) -> list[Param]:
    """The notes' four: lr and weight decay log-uniform over two decades around the recipe's, dropout in [0, 0.5],
    and the warmup (fine-tuning's for a fine-tuning recipe, else the recipe's ``LinearWarmup``) in [0, 2] epochs,
    at most what the shortest run leaves (``run_epochs``)."""
    from zoo.training.optim import OptimizerConfig

    optimizer = (config.get("model") or {}).get("optimizer") or {}
    resolved = OptimizerConfig.from_dict(optimizer).resolved()
    lr = resolved.get("lr") or 0.1
    decay = resolved.get("weight_decay") or 0.0
    space = [Param("model.optimizer.lr", lr / 10, lr * 10, log=True)]
    if "weight_decay" in resolved:
        space.append(
            Param("model.optimizer.weight_decay", decay / 10, decay * 10, log=True)
            if decay > 0
            else Param("model.optimizer.weight_decay", 1e-6, 1e-2, log=True)
        )
    space.append(Param("model.drop_rate", 0.0, 0.5))
    finetune = config.get("finetune") or {}
    if finetune.get("strategy", "none") not in ("none", "linear"):
        key, longest = "finetune.warmup", (run_epochs or 3) - int(finetune.get("unfreeze_epoch") or 0)
    else:
        key, longest = "trainer.callbacks.LinearWarmup.warmup", run_epochs or 2
    high = min(2.0, float(longest))
    if high > 0:
        space.append(Param(key, 0.0, high))
    return space
