"""Blocks against the notes' formulas: activations, norms, pooling, dropout kinds, DropPath, residual blocks."""

from __future__ import annotations

import pytest
import torch
from timm.layers import DropPath
from torch import nn

from zoo.models.blocks import (
    BasicBlock,
    Bottleneck,
    ConvNormAct,
    DropConnectLinear,
    PadShortcut,
    drop_path_rates,
    make_act,
    make_norm,
    make_pool,
)


def test_leaky_relu_is_max_of_0_1x_and_x_with_gradient_0_1():
    x = torch.tensor([-3.0, -0.5, 0.0, 2.0], requires_grad=True)
    y = make_act("leaky_relu")(x.clone())
    assert torch.allclose(y, torch.maximum(0.1 * x, x))
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.1, 0.1, 0.1, 1.0]))


def test_relu_is_max_of_0_and_x():
    x = torch.randn(100)
    assert torch.equal(make_act("relu")(x.clone()), x.clamp(min=0))


@pytest.mark.parametrize(
    ("norm", "dims"),
    [("batch", (0, 2, 3)), ("layer", (1, 2, 3)), ("instance", (2, 3))],
)
def test_norm_standardises_over_the_dimensions_of_the_notes(norm, dims):
    torch.manual_seed(0)
    x = torch.randn(8, 6, 5, 5) * 3 + 2
    y = make_norm(norm, 6).train()(x)
    assert torch.allclose(y.mean(dims), torch.zeros(1), atol=1e-5)
    assert torch.allclose(y.var(dims, unbiased=False), torch.ones(1), atol=1e-3)


def test_group_norm_standardises_each_group_of_channels():
    x = torch.randn(4, 64, 3, 3) * 5 - 1
    y = make_norm("group", 64)(x).reshape(4, 32, -1)  # 32 groups of 2 channels
    assert torch.allclose(y.mean(-1), torch.zeros(1), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(1), atol=1e-3)


def test_unknown_names_are_errors_that_list_the_choices():
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'.*batch, layer"):
        make_norm("batchnorm", 4)
    with pytest.raises(ValueError, match="unknown activation 'tanh'.*leaky_relu"):
        make_act("tanh")
    with pytest.raises(ValueError, match="unknown pooling 'min'"):
        make_pool("min")


@pytest.mark.parametrize(("f", "s", "p", "w1"), [(3, 1, None, 7), (5, 1, 2, 32), (3, 2, 1, 8), (1, 1, 0, 5)])
def test_conv_norm_act_output_size_and_parameters(f, s, p, w1):
    block = ConvNormAct(3, 10, f, s, p)
    pad = (f - 1) // 2 if p is None else p
    w2 = (w1 - f + 2 * pad) // s + 1
    assert block(torch.randn(2, 3, w1, w1)).shape == (2, 10, w2, w2)
    # F·F·D1·K conv weights (the norm's β replaces the bias) + γ, β of the norm
    assert sum(q.numel() for q in block.parameters()) == f * f * 3 * 10 + 2 * 10


def test_conv_without_norm_has_the_notes_bias_count():
    block = ConvNormAct(3, 10, 5, 1, 2, norm="none")
    assert sum(q.numel() for q in block.parameters()) == 760  # 5·5·3·10 + 10


def test_2x2_stride_2_pooling_takes_the_max_or_mean_of_each_block():
    x = torch.randn(2, 3, 8, 8)
    blocks = x.reshape(2, 3, 4, 2, 4, 2)
    assert torch.equal(make_pool("max")(x), blocks.amax((3, 5)))
    assert torch.allclose(make_pool("avg")(x), blocks.mean((3, 5)))
    assert make_pool("fractional")(x).shape == (2, 3, 5, 5)  # floor(8/√2)


def test_torchs_dropout_is_the_inverted_dropout_the_models_use():
    torch.manual_seed(0)
    drop = nn.Dropout(0.25)
    x = torch.ones(100_000)
    y = drop.train()(x)
    assert torch.allclose(y.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert (y == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # E[y] = x
    assert torch.equal(drop.eval()(x), x)


def test_torchs_dropout2d_drops_whole_feature_maps():
    torch.manual_seed(0)
    x = torch.rand(16, 32, 4, 4) + 1
    y = nn.Dropout2d(0.5).train()(x)
    per_map = y.flatten(2)
    dropped = (per_map == 0).all(-1)
    kept = torch.isclose(per_map, x.flatten(2) * 2).all(-1)
    assert (dropped | kept).all() and 0.3 < dropped.float().mean() < 0.7
    assert torch.equal(nn.Dropout2d(0.5).eval()(x), x)


def test_timms_drop_path_drops_whole_samples_and_is_identity_in_eval():
    torch.manual_seed(0)
    drop = DropPath(0.5)
    x = torch.rand(64, 3, 4, 4) + 1
    y = drop.train()(x).flatten(1)
    dropped = (y == 0).all(1)
    kept = torch.isclose(y, x.flatten(1) * 2).all(1)
    assert (dropped | kept).all() and 0.25 < dropped.float().mean() < 0.75
    assert torch.equal(drop.eval()(x), x)


def test_stochastic_depth_linear_decay_rule():
    rates = drop_path_rates(0.5, 10)
    assert rates == pytest.approx([0.05 * (i + 1) for i in range(10)])
    p_last = 0.8  # the paper's survival probability of the last block: drop rate 1 − p_L = 0.2
    survival = [1 - (k / 10) * (1 - p_last) for k in range(1, 11)]  # p_l = 1 − (l/L)(1 − p_L)
    assert [1 - r for r in drop_path_rates(1 - p_last, 10)] == pytest.approx(survival)


def test_pad_shortcut_is_the_stochastic_depth_papers_average_pool_and_zero_pad():
    x = torch.randn(2, 16, 8, 8)
    pooled = nn.functional.avg_pool2d(x, kernel_size=1, stride=2)  # the paper's code: 1×1 window, stride 2
    assert torch.equal(PadShortcut(16, 32, 2)(x)[:, 8:24], pooled)


def test_pad_shortcut_subsamples_and_zero_pads_channels():
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_basic_block_parameters_follow_F_F_D1_K():
    block = BasicBlock(64, 128, stride=2)
    convs = 3 * 3 * 64 * 128 + 3 * 3 * 128 * 128 + 1 * 1 * 64 * 128
    norms = 3 * 2 * 128
    assert sum(p.numel() for p in block.parameters()) == convs + norms
    assert block(torch.randn(2, 64, 8, 8)).shape == (2, 128, 4, 4)


def test_bottleneck_expands_by_4():
    block = Bottleneck(256, 64)
    assert block.downsample is None  # 256 → 64·4: identity shortcut
    convs = 256 * 64 + 3 * 3 * 64 * 64 + 64 * 256
    assert sum(p.numel() for p in block.parameters()) == convs + 2 * (64 + 64 + 256)
    assert Bottleneck(64, 64, stride=2)(torch.randn(1, 64, 8, 8)).shape == (1, 256, 4, 4)


@pytest.mark.parametrize("Block", [BasicBlock, Bottleneck])
def test_residual_block_with_its_branch_dropped_is_the_shortcut(Block):
    block = Block(16 * Block.expansion, 16, drop_path=1.0).train()
    x = torch.randn(4, 16 * Block.expansion, 6, 6)
    assert torch.equal(block(x.clone()), torch.relu(x))  # y = act(x + 0)
    assert not torch.equal(block.eval()(x.clone()), torch.relu(x))  # eval: the whole block runs


@pytest.mark.parametrize("Block", [BasicBlock, Bottleneck])
def test_zero_init_last_makes_the_block_start_as_identity(Block):
    block = Block(16 * Block.expansion, 16)
    block.zero_init_last()
    x = torch.randn(4, 16 * Block.expansion, 6, 6)
    assert torch.allclose(block.eval()(x.clone()), torch.relu(x))


@pytest.mark.parametrize("norm", ["layer", "instance", "group", "none"])
def test_residual_blocks_take_every_norm(norm):
    block = BasicBlock(32, 64, stride=2, norm=norm, act="leaky_relu")
    assert block(torch.randn(2, 32, 8, 8)).shape == (2, 64, 4, 4)
    assert isinstance(block.act1, nn.LeakyReLU) and block.act1.negative_slope == 0.1
    assert (block.conv1.bias is not None) == (norm == "none")


def test_drop_connect_drops_weights_not_activations():
    torch.manual_seed(0)
    layer = DropConnectLinear(200, 300, p=0.25)
    x = torch.eye(200)  # row j reads column j of the masked weight matrix
    w = (layer.train()(x) - layer.bias).T  # 300×200: W ⊙ M/(1 − p)
    dropped = w == 0
    assert torch.allclose(w[~dropped], layer.weight[~dropped] / 0.75)
    assert dropped.float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert torch.equal(layer.eval()(x), nn.functional.linear(x, layer.weight, layer.bias))
    with pytest.raises(ValueError, match="drop_connect_rate must be in"):
        DropConnectLinear(2, 2, p=1.0)
