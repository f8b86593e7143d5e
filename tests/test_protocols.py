"""What the callbacks and the CLI ask of a model and a data module is the protocols of ``zoo.protocols``: the
shipped data modules and ``ImageClassifier`` are what the protocols' docstring says, and no code of the zoo
probes a data module or a LightningModule for an attribute (``hasattr``/``getattr``) instead."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_data_folder import make_folder

from zoo import ImageClassifier
from zoo.data import CIFARDataModule, DigitsDataModule, ImageFolderDataModule, SyntheticDataModule
from zoo.protocols import (
    Batched,
    ClassNames,
    EvalViews,
    FeatureData,
    FineTunable,
    Guarded,
    ImageList,
    ModelPreprocessing,
    Optimized,
    SplitData,
    SplitDatasets,
)

ROOT = Path(__file__).resolve().parents[1]
# names the zoo's code gives a data module or a LightningModule (``trainer.datamodule``, ``self.datamodule``, ...)
HOLDERS = {"dm", "datamodule", "pl_module", "lightning_module"}
IMAGE_DATA = {ClassNames, SplitDatasets, SplitData, FeatureData, Batched, ModelPreprocessing, EvalViews}
TENSOR_DATA = {ClassNames, SplitDatasets, SplitData, Batched}


def probes(path: Path, root: Path = ROOT) -> list[str]:
    """``hasattr(x, "name")`` and ``getattr(x, "name", ...)`` calls on a data module or LightningModule ``x``
    in ``path``; ``hparams`` (Lightning's dict of the constructor's arguments) and private markers left out."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2):
            continue
        target, name = node.args[:2]
        holder = target.id if isinstance(target, ast.Name) else getattr(target, "attr", None)
        if (
            node.func.id in ("hasattr", "getattr")
            and holder in HOLDERS
            and isinstance(name, ast.Constant)
            and name.value != "hparams"
            and not name.value.startswith("_")
        ):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {node.func.id}({holder}, {name.value!r})")
    return found


def test_no_code_probes_a_data_module_or_model_for_an_attribute():
    found = [
        p
        for package in ("zoo", "callbacks", "recipes")
        for f in (ROOT / package).rglob("*.py")
        for p in probes(f)
    ]
    assert found == [], "ask through zoo.protocols (isinstance) instead:\n" + "\n".join(found)


def test_the_probe_scan_finds_a_probe(tmp_path):
    code = tmp_path / "x.py"
    code.write_text(
        'names = getattr(trainer.datamodule, "class_names", None)\n'
        'ok = hasattr(pl_module, "guard") and getattr(dm, "hparams", {})\n'
    )
    assert probes(code, tmp_path) == [
        "x.py:1: getattr(datamodule, 'class_names')",
        "x.py:2: hasattr(pl_module, 'guard')",
    ]


@pytest.mark.parametrize(
    ("make", "protocols"),
    [
        (lambda tmp: DigitsDataModule(), TENSOR_DATA),
        (lambda tmp: SyntheticDataModule(), TENSOR_DATA),
        (lambda tmp: CIFARDataModule(root=str(tmp)), IMAGE_DATA),
        (
            lambda tmp: ImageFolderDataModule(root=str(make_folder(tmp / "photos", {"a": 6, "b": 6}))),
            IMAGE_DATA,
        ),
    ],
    ids=["digits", "synthetic", "cifar", "folder"],
)
def test_the_shipped_data_modules_are_the_protocols_they_promise(tmp_path, make, protocols):
    dm = make(tmp_path)
    every = IMAGE_DATA | TENSOR_DATA
    assert {p for p in every if isinstance(dm, p)} == protocols


def test_an_image_folder_lists_its_image_files(tmp_path):
    dm = ImageFolderDataModule(root=str(make_folder(tmp_path / "photos", {"a": 6, "b": 6})), val_fraction=0.5)
    dm.setup("fit")
    assert all(isinstance(split, ImageList) for split in dm.splits.values())
    assert not isinstance(DigitsDataModule().splits.get("train"), ImageList)


def test_the_image_classifier_is_fine_tunable_guarded_and_optimized():
    model = ImageClassifier(arch="resnet20", num_classes=10)
    assert all(isinstance(model, p) for p in (FineTunable, Guarded, Optimized))
