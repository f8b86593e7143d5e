"""The model's preprocessing reaches the data module by an explicit hand-over (``set_model_config``), made by the
CLI once both exist: the data module works without any trainer or model, and never reads the trainer's module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_data_folder import make_folder

from zoo.data import ImageFolderDataModule
from zoo.models.backbones import LITE0_PYPI

ROOT = Path(__file__).resolve().parents[1]
# a backbone's timm data config, as ImageClassifier.pretrained_data_config() gives it
BACKBONE = {
    "input_size": (3, 40, 40),
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "crop_mode": "center",
    "mean": (0.25, 0.5, 0.75),
    "std": (0.5, 0.25, 0.125),
}


def data(root: Path, **kw) -> ImageFolderDataModule:
    options = dict(num_workers=0, batch_size=4, val_fraction=0.5, test_fraction=0, stats_images=0)
    return ImageFolderDataModule(str(root), **{**options, **kw})


def test_a_handed_config_is_used_without_any_trainer(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", {"cat": 4, "dog": 4})
    dm = data(root)
    dm.set_model_config(BACKBONE)
    assert dm.trainer is None
    cfg = dm.preprocess_config()
    assert cfg["input_size"] == (3, 40, 40) and cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 0.875
    assert cfg["mean"] == (0.25, 0.5, 0.75) and cfg["std"] == (0.5, 0.25, 0.125)
    assert dm.stats is None  # the training split's statistics were not needed
    out = capsys.readouterr().out
    assert "Preprocessing (model): input 3×40×40, bicubic, crop_pct 0.875" in out
    # the data's own options still override the backbone's
    dm = data(root, image_size=24, mean=[0.5, 0.5, 0.5])
    dm.set_model_config(BACKBONE)
    cfg = dm.preprocess_config()
    assert (
        cfg["input_size"] == (3, 24, 24) and cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == BACKBONE["std"]
    )


def test_nothing_handed_over_means_the_fallback_and_model_says_how(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", {"cat": 4, "dog": 4})
    dm = data(root, image_size=32)
    dm.set_model_config(None)  # a model trained from scratch
    cfg = dm.preprocess_config()
    assert dm.stats is not None and cfg["mean"] == tuple(dm.stats["mean"])
    assert "Preprocessing (dataset)" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"set_model_config\(model.pretrained_data_config\(\)\)"):
        data(root, preprocess="model").preprocess_config()


def test_the_cli_hands_the_pretrained_backbones_preprocessing_to_the_data(tmp_path, capsys):
    from recipes.lightning_cli import build_recipe, expand_recipe

    root = make_folder(tmp_path / "pets", {"cat": 6, "dog": 6})
    args = ["--recipe", "finetune", "--data.root", str(root), "--data.num_workers", "0"]
    args += [
        "--model.pretrained",
        "false",
        "--model.pretrained_path",
        LITE0_PYPI,
        "--trainer.logger",
        "false",
    ]
    cli = build_recipe(expand_recipe(args))
    handed = cli.datamodule.model_config
    assert handed is not None and handed == cli.model.pretrained_data_config()
    cli.datamodule.preprocess_config()
    out = capsys.readouterr().out
    assert (
        "Preprocessing (model): input 3×224×224, bicubic, crop_pct 0.875, mean (0.4850, 0.4560, 0.4060)"
        in out
    )


def test_the_data_modules_never_read_the_model():
    """No module under zoo/data/ imports the LightningModule or reaches for the trainer's module."""
    for path in sorted((ROOT / "zoo" / "data").rglob("*.py")):
        source = path.read_text()
        assert "lightning_module" not in source, f"{path.name} reads trainer.lightning_module"
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any(
                n == "zoo.training.module" or n.startswith("zoo.training.module.") for n in names
            ), path.name
            assert not any(n.endswith("ImageClassifier") for n in names), path.name
