"""The shipped recipes: ``recipes/configs/NAME.yaml``, each opening with a one-line comment of its purpose."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

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
        raise SystemExit(
            f"error: unknown recipe {name!r}. Shipped recipes: {', '.join(recipe_names())}. "
            "Use --config PATH for a YAML file of your own."
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
    config = yaml.safe_load(text) or {}
    model = (config.get("model") or {}).get("arch", "convnet")
    data = (config.get("data") or {}).get("class_path", "?").rsplit(".", 1)[-1]
    return Recipe(name, path, description, model, data)
