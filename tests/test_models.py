"""Zoo families: published parameter counts, torchvision equivalence, every model training, init schemes, options."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import FAST_TRAINER
from timm.layers import DropPath, GroupNorm1
from torch import nn

import zoo
from zoo.models.blocks import DropConnectLinear
from zoo.models.registry import model_options

# torchvision's published counts with 1000 classes
PUBLISHED = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
}
TORCHVISION_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] + [
    f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_counts_equal_the_published_networks(name):
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = zoo.create_model(name, num_classes=1000)
    assert n_params(model) == PUBLISHED[name]


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_same_tensors_as_torchvision(name):
    with torch.device("meta"):
        ours = zoo.create_model(name, num_classes=1000).state_dict()
        theirs = getattr(torchvision.models, name)(weights=None).state_dict()
    assert n_params_sd(ours) == n_params_sd(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def n_params_sd(state_dict) -> int:
    return sum(
        v.numel() for k, v in state_dict.items() if not k.endswith(("running_mean", "running_var", "tracked"))
    )


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_give_torchvision_outputs(name):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None, num_classes=7).eval()
    ours = zoo.create_model(name, num_classes=7).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def cifar_resnet_params(n: int, classes: int = 10) -> int:
    """Closed form, F·F·D1·K per conv + 2K per BN, option-A shortcuts (no parameters)."""
    conv = lambda d1, k: 3 * 3 * d1 * k + 2 * k  # noqa: E731
    total = conv(3, 16)
    for d_in, d in ((16, 16), (16, 32), (32, 64)):
        total += conv(d_in, d) + conv(d, d) + (n - 1) * 2 * conv(d, d)
    return total + 64 * classes + classes


@pytest.mark.parametrize(
    ("name", "n", "published"),
    [("resnet20", 3, 0.27), ("resnet32", 5, 0.46), ("resnet56", 9, 0.85), ("resnet110", 18, 1.7)],
)
def test_cifar_resnets_have_6n_plus_2_layers_and_the_papers_sizes(name, n, published):
    model = zoo.create_model(name, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 6 * n + 2
    assert n_params(model) == cifar_resnet_params(n)
    assert round(n_params(model) / 1e6, 2 if published < 1 else 1) == published  # He et al., Table 6


def _small_options(name: str) -> dict:
    if name.startswith("vgg"):
        return {"fc_width": 32, "pool_size": 1}
    if name.startswith("resnet"):
        return {"drop_path_rate": 0.2, "drop_rate": 0.1}
    return {}


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_model_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=5, in_chans=3, **_small_options(name)).train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 4])
    logits = model(x)
    assert logits.shape == (2, 5)
    nn.functional.cross_entropy(logits, y).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_every_model_has_the_timm_interface():
    for name in zoo.list_models():
        with torch.device("meta"):
            model = zoo.create_model(name, num_classes=3)
        assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 3
        model.reset_classifier(7)
        assert model.get_classifier().out_features == 7
        features = model.forward_features(torch.zeros(1, 3, 64, 64, device="meta"))
        assert features.shape[1] == model.num_features
        assert model.pretrained_cfg["input_size"][0] == 3


def test_drop_path_is_on_in_train_and_off_in_eval():
    torch.manual_seed(0)
    model = zoo.create_model("resnet20", num_classes=10, drop_path_rate=0.5)
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_every_residual_block_has_a_drop_path_with_the_linear_rule():
    model = zoo.create_model("resnet56", drop_path_rate=0.3)
    blocks = [m for m in model.modules() if hasattr(m, "drop_path")]
    assert len(blocks) == 27 and all(isinstance(b.drop_path, DropPath) for b in blocks)
    rates = [b.drop_path.drop_prob for b in blocks]
    assert rates == pytest.approx([0.3 * (i + 1) / 27 for i in range(27)])
    # present at rate 0 too, so a callback can turn it on later
    assert all(
        isinstance(b.drop_path, DropPath)
        for b in zoo.create_model("resnet18").modules()
        if hasattr(b, "drop_path")
    )


def _layer4_weight(init: str, act: str = "relu", **kw) -> torch.Tensor:
    torch.manual_seed(0)
    return zoo.create_model("resnet18", init=init, act=act, **kw).layer4[1].conv2.weight.detach()


FAN_IN = 512 * 3 * 3


@pytest.mark.parametrize(
    ("init", "act", "std"),
    [
        ("normal", "relu", 0.01),
        ("fan_in", "relu", 1 / math.sqrt(FAN_IN)),
        ("kaiming", "relu", math.sqrt(2 / FAN_IN)),
        ("kaiming", "leaky_relu", math.sqrt(2 / (1.01 * FAN_IN))),
        ("xavier", "relu", math.sqrt(6 / (2 * FAN_IN)) / math.sqrt(3)),
    ],
)
def test_init_schemes_give_the_notes_standard_deviation(init, act, std):
    w = _layer4_weight(init, act)
    assert w.mean().item() == pytest.approx(0, abs=std * 0.01)
    assert w.std().item() == pytest.approx(std, rel=0.01)


def test_truncated_gaussian_stays_within_2_sigma():
    w = _layer4_weight("trunc_normal", init_std=0.02)
    assert w.abs().max().item() <= 0.04
    # std of N(0, σ²) truncated at ±2σ is 0.8796·σ
    assert w.std().item() == pytest.approx(0.8796 * 0.02, rel=0.01)


def test_init_zeroes_biases_and_sets_norms_to_identity():
    model = zoo.create_model("resnet20", init="normal", norm="none")
    assert all(m.bias.abs().sum() == 0 for m in model.modules() if isinstance(m, nn.Conv2d))
    model = zoo.create_model("vgg11_bn", num_classes=10, init="fan_in", fc_width=16, pool_size=1)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in norms)


def test_zero_init_last_makes_every_block_start_as_identity():
    model = zoo.create_model("resnet50", zero_init_last=True)
    assert all((b.bn3.weight == 0).all() for b in model.modules() if hasattr(b, "bn3"))
    block = model.layer3[2].eval()
    x = torch.randn(1, 1024, 4, 4)
    assert torch.allclose(block(x.clone()), torch.relu(x))


def test_family_default_inits():
    assert model_options("resnet18")["init"] == "kaiming"
    assert model_options("resnet110")["init"] == "kaiming"
    assert model_options("vgg16")["init"] == "kaiming"
    assert model_options("convnet")["init"] == "default"  # torch's U(±1/sqrt(fan_in))
    assert _layer4_weight(model_options("resnet18")["init"]).std().item() == pytest.approx(
        math.sqrt(2 / FAN_IN), rel=0.01
    )


@pytest.mark.parametrize("norm", ["layer", "instance", "group", "none"])
def test_norm_option_reaches_every_family(norm):
    kinds = {"layer": GroupNorm1, "instance": nn.InstanceNorm2d, "group": nn.GroupNorm, "none": nn.Conv2d}
    for name in ("convnet", "resnet20", "vgg11"):
        model = zoo.create_model(name, norm=norm, act="leaky_relu", **_small_options(name))
        assert any(type(m) is kinds[norm] for m in model.modules()), name
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), name
        assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1 for m in model.modules())
        assert model(torch.randn(2, 3, 32, 32)).shape[0] == 2


def test_options_for_dropout_pooling_and_channels():
    model = zoo.create_model("convnet", in_chans=1, channel_drop_rate=0.2, pool="avg", drop_rate=0.4)
    assert sum(isinstance(m, nn.Dropout2d) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 2
    assert model.drop.p == 0.4
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    vgg = zoo.create_model("vgg11", drop_rate=0.3, fc_width=16, drop_connect_rate=0.2)
    assert [m.p for m in vgg.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert [m.p for m in vgg.modules() if isinstance(m, DropConnectLinear)] == [0.2, 0.2]
    resnet = zoo.create_model("resnet20", drop_connect_rate=0.1)
    resnet.reset_classifier(3)
    assert isinstance(resnet.fc, DropConnectLinear) and resnet.fc.p == 0.1 and resnet.fc.out_features == 3


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match=r"'resnet18' has no option 'widht'.*widths=\(64, 128, 256, 512\)"):
        zoo.create_model("resnet18", widht=(1, 2))
    with pytest.raises(ValueError, match="vgg16 has no residual branches.*drop_path_rate"):
        zoo.create_model("vgg16", drop_path_rate=0.1)
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18"):
        zoo.create_model("resnet19")
    with pytest.raises(ValueError, match="no pretrained weights.*pretrained_path"):
        zoo.create_model("resnet18", pretrained=True)
    with pytest.raises(ValueError, match="unknown init 'he'"):
        zoo.create_model("resnet20", init="he")
    with pytest.raises(ValueError, match="has no option 'block'"):
        zoo.create_model("resnet20", block="bottleneck")


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("convnet", {}),
        ("resnet20", {}),
        ("resnet50", {}),
        ("vgg11_bn", {"fc_width": 16, "pool_size": 1}),
        ("timm/test_resnet", {}),
    ],
)
def test_every_family_works_inside_image_classifier(arch, kwargs):
    torch.manual_seed(0)
    module = zoo.ImageClassifier(arch, num_classes=4, in_chans=1, drop_rate=0.3, model_kwargs=kwargs)
    assert module.model.get_classifier().out_features == 4
    # stochastic depth is callbacks.StochasticDepth's: the network is built without it
    assert max((m.drop_prob for m in module.model.modules() if isinstance(m, DropPath)), default=0.0) == 0.0
    loss = module.loss(module(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss) and module.model.get_classifier().weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_image_classifier_trains_a_cifar_resnet_through_the_recipe_cli(zoo_cli):
    """resnet20 with stochastic depth replaces the digits recipe's convnet; 3 epochs learn the digits."""
    argv = ["fit", "--recipe", "digits", "--model.arch", "resnet20", "--model.model_kwargs", "{norm: group}"]
    depth = ["--trainer.callbacks+=callbacks.StochasticDepth", "--trainer.callbacks.drop_path_rate", "0.1"]
    assert zoo_cli(*argv, *depth, "--trainer.max_epochs", "3", *FAST_TRAINER) == 0
    with (Path("runs/digits/version_0") / "metrics.csv").open() as f:
        top1 = [float(r["test/top1"]) for r in csv.DictReader(f) if r.get("test/top1")]
    assert top1 and top1[-1] > 0.6  # chance is 0.1


def test_models_command_lists_models_options_and_timm_matches(zoo_cli, capsys):
    assert zoo_cli("models") == 0
    out = capsys.readouterr().out
    assert all(name in out for name in zoo.list_models())
    assert zoo_cli("models", "resnet20") == 0
    out = capsys.readouterr().out
    assert "shortcut" in out and "'pad'" in out and "drop_path_rate" in out
    assert "--trainer.callbacks+=callbacks.StochasticDepth --trainer.callbacks.drop_path_rate R" in out
    assert zoo_cli("models", "efficientnet_lite*") == 0
    assert "timm/efficientnet_lite0" in capsys.readouterr().out


def test_every_registered_model_is_a_function_of_its_own_name():
    """`grep "def resnet50"` finds each model: one explicit function per name over its family's builder."""
    import zoo.models
    from zoo.models.registry import _MODELS

    families = ("convnet", "resnet", "resnet_cifar", "vgg")
    source = "".join((Path(zoo.models.__file__).parent / f"{f}.py").read_text() for f in families)
    for name in zoo.list_models():
        assert f"\ndef {name}(**kwargs)" in source, name
        assert _MODELS[name].__name__ == name and _MODELS[name].__doc__
    assert model_options("resnet50") == model_options("resnet18")  # the same options over other blocks
    assert "layers" not in model_options("resnet50") and "depth" not in model_options("vgg16_bn")
    with pytest.raises(ValueError, match="'vgg16_bn' has no option 'norm'"):
        zoo.create_model("vgg16_bn", norm="layer")


def test_a_users_factory_lists_its_options_from_its_signature():
    from zoo.models.registry import _DESCRIPTIONS, _MODELS, register_model

    @register_model
    def tiny_users_net(num_classes: int = 10, in_chans: int = 3, width: int = 4) -> nn.Module:
        """A user's model."""
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    try:
        assert model_options("tiny_users_net") == {"num_classes": 10, "in_chans": 3, "width": 4}
        with pytest.raises(ValueError, match="'tiny_users_net' has no option 'depth'.*width=4"):
            zoo.create_model("tiny_users_net", depth=3)
        assert zoo.create_model("tiny_users_net", num_classes=2)(torch.zeros(1, 3, 2, 2)).shape == (1, 2)
    finally:
        _MODELS.pop("tiny_users_net"), _DESCRIPTIONS.pop("tiny_users_net")
