"""``zoo summary``: the notes' conv arithmetic, per-layer shapes, parameters and MACs, and the docs' model table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import zoo
from zoo.runtime.summary import conv_arithmetic, fit_note, output_size, summarize

ROOT = Path(__file__).resolve().parents[1]


def test_notes_example_32x32x3_with_ten_5x5_filters(zoo_cli, capsys):
    argv = ["summary", "conv", "--filters", "10", "--kernel", "5", "--stride", "1", "--pad", "2"]
    assert zoo_cli(*argv, "--input_size", "3", "32", "32") == 0
    out = capsys.readouterr().out
    assert "output volume 32×32×10" in out
    assert "5·5·3·10 + 10 = 760" in out
    assert "10×32×32" in out and "760" in out.split("10×32×32")[1].split("\n")[0]  # the table row


def test_notes_7x7_input_3x3_filter_stride_2_gives_3x3(zoo_cli, capsys):
    assert (
        zoo_cli(
            "summary",
            "conv",
            "--filters",
            "1",
            "--kernel",
            "3",
            "--stride",
            "2",
            "--input_size",
            "1",
            "7",
            "7",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "W2 = (7 − 3 + 2·0)/2 + 1 = 3" in out and "output volume 3×3×1" in out


def test_notes_stride_3_does_not_fit(zoo_cli, capsys):
    assert zoo_cli("summary", "conv", "--kernel", "3", "--stride", "3", "--input_size", "1", "7", "7") == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "does not fit" in out and "(7 − 3 + 2·0)/3 + 1 = 2.33" in out
    assert "Strides that fit with padding 0: 1, 2" in out  # (7 − 3) is divisible by 1 and 2 only


@pytest.mark.parametrize(
    ("w1", "f", "p", "s", "w2"), [(7, 3, 0, 1, 5), (7, 3, 0, 2, 3), (7, 3, 1, 1, 7), (32, 5, 2, 1, 32)]
)
def test_output_size_formula_matches_torch(w1, f, p, s, w2):
    assert output_size(w1, f, p, s) == w2
    assert nn.Conv2d(1, 1, f, s, p)(torch.zeros(1, 1, w1, w1)).shape[-1] == w2


def test_conv_arithmetic_names_paddings_that_fit():
    with pytest.raises(ValueError, match="paddings that fit with stride 3: 1"):
        conv_arithmetic((3, 7, 7), 4, 3, 3, 0)  # (7 − 3 + 2)/3 + 1 = 3
    assert "W2 = (7 − 3 + 2·1)/3 + 1 = 3" in conv_arithmetic((3, 7, 7), 4, 3, 3, 1)


def test_fit_note_flags_non_integer_sizes_only():
    assert fit_note(nn.Conv2d(3, 8, 7, 2, 3), (224, 224)) == "H, W: (224 − 7 + 2·3)/2 + 1 = 112.50 → 112"
    assert fit_note(nn.Conv2d(3, 8, 3, 1, 1), (7, 7)) == ""
    assert fit_note(nn.MaxPool2d(2, 2), (7, 8)) == "H: (7 − 2 + 2·0)/2 + 1 = 3.50 → 3"
    assert fit_note(nn.MaxPool2d(2, 2, ceil_mode=True), (7, 7)).endswith("→ 4")


def test_resnet18_summary_totals_and_layer_shapes():
    with torch.device("meta"):
        model = zoo.create_model("resnet18", num_classes=1000)
    s = summarize(model, (3, 224, 224))
    rows = {layer.name: layer for layer in s.layers}
    assert s.params == 11_689_512 == sum(layer.params for layer in s.layers)
    assert rows["conv1"].output == (64, 112, 112) and rows["conv1"].params == 7 * 7 * 3 * 64
    assert rows["conv1"].macs == 7 * 7 * 3 * 64 * 112 * 112
    assert rows["maxpool"].output == (64, 56, 56)
    assert rows["layer4.1.conv2"].output == (512, 7, 7)
    assert rows["fc"].params == 512 * 1000 + 1000 and s.output == (1000,)
    # the stride-2 layers do not fit exactly (torch floors x.5); the stride-1 ones do
    assert {layer.name for layer in s.misfits} == {
        "conv1",
        "maxpool",
        *(f"layer{i}.0.{c}" for i in (2, 3, 4) for c in ("conv1", "downsample.0")),
    }


@pytest.mark.parametrize("name", ["resnet50", "vgg11_bn", "resnet20", "timm/efficientnet_lite0"])
def test_macs_equal_torch_flop_counter(name):
    with torch.device("meta"):
        model = zoo.create_model(name).eval()
    size = model.pretrained_cfg["input_size"]
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *size, device="meta"))
    assert summarize(model, size).macs * 2 == counter.get_total_flops()  # 1 MAC = 2 FLOPs


def test_real_weights_and_meta_give_the_same_summary():
    torch.manual_seed(0)
    real = zoo.create_model("resnet20")
    with torch.device("meta"):
        meta = zoo.create_model("resnet20")
    a, b = summarize(real, (3, 32, 32)), summarize(meta, (3, 32, 32))
    assert [(x.name, x.output, x.params, x.macs) for x in a.layers] == [
        (x.name, x.output, x.params, x.macs) for x in b.layers
    ]
    assert real.training  # summarize restores the mode


def test_too_small_an_input_is_a_clear_error():
    with torch.device("meta"):
        model = zoo.create_model("vgg11", pool_size=1, fc_width=8)
    with pytest.raises(ValueError, match="a 3×16×16 input does not fit this model"):
        summarize(model, (3, 16, 16))


def test_summary_command_for_models(zoo_cli, capsys):
    assert (
        zoo_cli("summary", "resnet20", "--input_size", "1", "8", "8", "--num_classes", "10", "--depth", "1")
        == 0
    )
    out = " ".join(capsys.readouterr().out.split())
    grey = 269_722 - 3 * 3 * 2 * 16  # the stem sees one channel instead of three
    assert "input 1×8×8 → output 10" in out and f"parameters {grey:,}" in out
    assert zoo_cli("summary", "vgg16", "-o", "norm=batch", "--depth", "1") == 0
    assert "parameters 138,365,992" in " ".join(capsys.readouterr().out.split())
    assert zoo_cli("summary", "resnet19") == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().out


def test_docs_model_table_is_current():
    spec = importlib.util.spec_from_file_location("model_table", ROOT / "benchmarks" / "model_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "models.md").read_text()
    assert module.render(page) == page, "docs/models.md is out of date: run python benchmarks/model_table.py"
    assert "| `resnet50` | 1000 | 3×224×224 | 25,557,032 | 4,089.2 M |" in page
