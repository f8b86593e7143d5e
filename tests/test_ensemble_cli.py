"""``zoo ensemble`` on two digits checkpoints: each model's and the ensemble's accuracy, predictions, and
clear errors for checkpoints that do not fit."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER

from zoo.data import DigitsDataModule
from zoo.training.module import ImageClassifier


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[str]:
    """Two digits models trained independently (different seeds) for 2 epochs each."""
    import os

    from recipes.cli import main

    where = tmp_path_factory.mktemp("ensemble")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        for seed in (1, 2):
            args = ["fit", "--recipe", "digits", "--seed_everything", str(seed), "--trainer.max_epochs", "2"]
            assert main([*args, "--test_after_fit", "false", *FAST_TRAINER]) == 0
    finally:
        os.chdir(cwd)
    return [str(where / f"runs/digits/version_{v}/checkpoints/last.ckpt") for v in (0, 1)]


def _probs(path: str, loader) -> tuple[torch.Tensor, torch.Tensor]:
    model = ImageClassifier.load_from_checkpoint(path, weights_only=True).eval()
    with torch.no_grad():
        pairs = [(model(x).softmax(-1), y) for x, y in loader]
    return torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])


def test_prints_each_models_and_the_ensembles_accuracy(two_runs, zoo_cli, capsys):
    assert zoo_cli("ensemble", "--recipe", "digits", "--ckpt", *two_runs, "--json", "scores.json") == 0
    out = capsys.readouterr().out
    assert "ensemble of 2" in out and "val top1" in out and "test top1" in out
    for path in two_runs:
        assert Path(path).name in out
    scores = json.loads(Path("scores.json").read_text())
    dm = DigitsDataModule()
    dm.setup("fit")
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        (p0, y), (p1, _) = _probs(two_runs[0], loader), _probs(two_runs[1], loader)
        for path, p in zip(two_runs, (p0, p1)):
            assert scores[path][split]["top1"] == pytest.approx(
                (p.argmax(1) == y).float().mean().item(), abs=1e-6
            )
        mean = (p0 + p1) / 2  # the ensemble: the mean of the softmax outputs
        assert scores["ensemble of 2"][split]["top1"] == pytest.approx(
            (mean.argmax(1) == y).float().mean().item(), abs=1e-6
        )
        nll = -mean[torch.arange(len(y)), y].log().mean().item()
        assert scores["ensemble of 2"][split]["nll"] == pytest.approx(nll, rel=1e-5)
        assert scores["ensemble of 2"][split]["top1"] > 0.9


def _error(zoo_cli, capsys, *args) -> str:
    """The one ``error:`` line of a failed command, which must exit 2 (a user's mistake)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        zoo_cli(*args)
    assert done.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in "\n".join(lines)
    return lines[-1]


def test_last_k_is_the_ensemble_of_the_last_checkpoints(two_runs, zoo_cli, capsys):
    args = ["ensemble", "--recipe", "digits", "--ckpt", *two_runs, "--split", "val", "--last", "1"]
    assert zoo_cli(*args, "--json", "last.json") == 0
    scores = json.loads(Path("last.json").read_text())
    assert scores["ensemble of last 1"] == scores[two_runs[1]]  # the mean of one model is that model
    assert set(next(iter(scores.values()))) == {"val"}
    error = _error(zoo_cli, capsys, "ensemble", "--recipe", "digits", "--ckpt", *two_runs, "--last", "3")
    assert "--last 3 must be between 1 and the 2 checkpoints" in error


def test_a_split_the_data_does_not_hold_is_left_out(two_runs, zoo_cli):
    """The data module says which splits it has (``SplitData.has_split``): no validation split, the test alone."""
    args = ["ensemble", "--recipe", "digits", "--ckpt", *two_runs, "--data.val_fraction", "0"]
    assert zoo_cli(*args, "--json", "test_only.json") == 0
    scores = json.loads(Path("test_only.json").read_text())
    assert {split for row in scores.values() for split in row} == {"test"}


def test_writes_the_ensembles_predictions(two_runs, zoo_cli):
    assert zoo_cli("ensemble", "--recipe", "digits", "--ckpt", *two_runs, "--predictions", "ens.csv") == 0
    with open("ens.csv") as f:
        rows = list(csv.DictReader(f))
    dm = DigitsDataModule()
    dm.setup("fit")
    p0, y = _probs(two_runs[0], dm.test_dataloader())
    p1, _ = _probs(two_runs[1], dm.test_dataloader())
    mean = (p0 + p1) / 2
    assert len(rows) == len(y) == 360
    assert [r["path"] for r in rows] == [f"test/{i}" for i in range(360)]  # row i is the i-th test image
    assert [int(r["class_1"]) for r in rows] == mean.argmax(1).tolist()
    accuracy = (torch.tensor([int(r["class_1"]) for r in rows]) == y).float().mean().item()
    assert accuracy > 0.9  # against the true labels: the classes are not shifted
    assert [float(r["prob_1"]) for r in rows] == pytest.approx(mean.max(1).values.tolist(), abs=1e-6)
    assert all(float(r["prob_1"]) >= float(r["prob_2"]) >= float(r["prob_3"]) for r in rows)


def test_checkpoint_of_another_architecture_names_the_file_and_keys(two_runs, zoo_cli, capsys):
    error = _error(
        zoo_cli,
        capsys,
        "ensemble",
        "--recipe",
        "digits",
        "--ckpt",
        *two_runs,
        "--model.model_kwargs.widths",
        "[16,32]",
    )
    assert re.search(
        r"last.ckpt: the checkpoint does not fit.*shape mismatches model\.features.*--own_arch", error
    )
    other_arch = ["--model.arch", "resnet20", "--model.model_kwargs", "{}"]
    error = _error(zoo_cli, capsys, "ensemble", "--recipe", "digits", "--ckpt", two_runs[0], *other_arch)
    assert re.search(r"checkpoint arch 'convnet', model arch 'resnet20'.*missing keys model\.conv1", error)
    # each member built from its own checkpoint instead
    assert zoo_cli("ensemble", "--recipe", "digits", "--ckpt", two_runs[0], "--own_arch", *other_arch) == 0
    error = _error(zoo_cli, capsys, "ensemble", "--recipe", "digits", "--ckpt", "nowhere.ckpt")
    assert "checkpoint(s) not found: nowhere.ckpt" in error


def test_checkpoint_with_pickled_objects_needs_an_explicit_opt_out(two_runs, zoo_cli, capsys):
    ckpt = torch.load(two_runs[0], weights_only=True)
    ckpt["extra"] = argparse.Namespace(note="a pickled object")
    torch.save(ckpt, "pickled.ckpt")
    error = _error(
        zoo_cli, capsys, "ensemble", "--recipe", "digits", "--ckpt", "pickled.ckpt", "--split", "val"
    )
    assert re.search(
        r"cannot load checkpoint 'pickled.ckpt' .*pickled Python objects \(argparse.Namespace\)", error
    )
    assert "--weights_only false" in error
    args = ("ensemble", "--recipe", "digits", "--ckpt", "pickled.ckpt")
    assert zoo_cli(*args, "--weights_only", "false") == 0


def test_malicious_pickle_is_refused_for_the_right_reason_and_never_runs(two_runs, zoo_cli, capsys, tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "payload": Payload()}, "evil.ckpt")
    error = _error(zoo_cli, capsys, "ensemble", "--recipe", "digits", "--ckpt", "evil.ckpt", "--split", "val")
    assert "pickled Python objects (posix.system), which could run code when loaded; nothing was run" in error
    assert "not a torch file" not in error
    assert not marker.exists()


def test_ensemble_of_image_folder_checkpoints_normalises_as_training_did(tmp_path, zoo_cli):
    """Image-folder data arrives as uint8 and is normalised by the data module's transfer hook: the ensemble's
    scores must be those of the models on the normalised images."""
    from test_finetune import make_folder

    from zoo.data import ImageFolderDataModule

    root = make_folder(tmp_path / "pets", per_class=8)
    small = [
        "--data.root",
        root,
        "--data.image_size",
        "32",
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "8",
    ]
    for seed in (1, 2):
        fit = ["fit", "--recipe", "folder", *small, "--seed_everything", seed, "--trainer.max_epochs", "1"]
        assert zoo_cli(*fit, "--test_after_fit", "false", *FAST_TRAINER) == 0
    runs = [str(tmp_path / f"runs/folder/version_{v}/checkpoints/last.ckpt") for v in (0, 1)]
    assert zoo_cli("ensemble", "--recipe", "folder", *small, "--ckpt", *runs, "--json", "scores.json") == 0
    scores = json.loads(Path("scores.json").read_text())
    dm = ImageFolderDataModule(str(root), image_size=32, num_workers=0, batch_size=8)
    dm.load_state_dict(torch.load(runs[0], weights_only=True)["ImageFolderDataModule"])
    dm.setup("fit")
    dm.config = {**dm.trained_config, "input_size": tuple(dm.trained_config["input_size"])}
    batches = [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]
    (p0, y), (p1, _) = _probs(runs[0], batches), _probs(runs[1], batches)
    assert scores[runs[0]]["val"]["top1"] == pytest.approx(
        (p0.argmax(1) == y).float().mean().item(), abs=1e-6
    )
    mean = (p0 + p1) / 2
    assert scores["ensemble of 2"]["val"]["top1"] == pytest.approx(
        (mean.argmax(1) == y).float().mean().item(), abs=1e-6
    )
