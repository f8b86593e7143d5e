"""The shipped recipes: ``recipes/configs/NAME.yaml``, each opening with a one-line comment of its purpose.

Read from the YAML files alone (no torch, no Lightning), so ``zoo recipes`` and ``zoo --help`` answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from zoo.errors import ZooError, did_you_mean

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class Recipe:
    name: str
    path: Path
    description: str
    model: str
    data: str


def recipe_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """Path of the shipped recipe ``name``; an unknown name is an error that lists the valid ones."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ZooError(
            f"unknown recipe {name!r}{did_you_mean(name, recipe_names())}. Shipped recipes: "
            f"{', '.join(recipe_names())}. Use --config PATH for a YAML file of your own."
        )
    return path


def load_recipe(name: str) -> Recipe:
    path = recipe_path(name)
    text = path.read_text()
    description = ""
    for line in text.splitlines():
        if line.startswith("#"):
            description = line.lstrip("# ").strip()
            if description.startswith(f"{name}:"):
                description = description[len(name) + 1 :].strip()
            break
    config = (
        yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    )  # libyaml: 10× faster
    model = (config.get("model") or {}).get("arch", "convnet")
    data = (config.get("data") or {}).get("class_path", "?").rsplit(".", 1)[-1]
    return Recipe(name, path, description, model, data)
