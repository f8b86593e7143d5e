"""Stochastic depth: the linear rule per block, the dropped share in training, the whole network in eval,
timm backbones, the ramp and logged rates of a real run, and the callback as the one way (the model's retired
``drop_path_rate`` refused in training, naming the callback that gives its rates; still read from checkpoints)."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER
from timm.layers import DropPath

import zoo
from callbacks import StochasticDepth
from callbacks.stochastic_depth import STAND_IN, depth_rates
from zoo.errors import ZooError
from zoo.training.module import ImageClassifier


def _attached(model, p_last=0.5, **kw) -> StochasticDepth:
    sd = StochasticDepth(p_last, **kw)
    sd.attach(model)
    sd.set_rates(p_last)
    return sd


def test_per_block_rates_follow_the_linear_rule():
    model = zoo.create_model("resnet56", num_classes=10)  # 27 residual blocks
    sd = _attached(model, 0.5)
    rates = [m.drop_prob for block in sd.blocks for m in block]
    assert len(rates) == 27
    assert rates == pytest.approx([0.5 * k / 27 for k in range(1, 28)])  # p_l = (l/L)·p_L
    assert sd.blocks[0][0] is model.layer1[0].drop_path and sd.blocks[-1][0] is model.layer3[-1].drop_path
    sd = StochasticDepth(0.4, rule="timm")
    sd.attach(model)
    assert sd.set_rates(0.4) == pytest.approx([0.4 * i / 26 for i in range(27)])  # 0 at the first block


def test_dropped_share_of_each_branch_matches_its_rate_in_training():
    torch.manual_seed(0)
    model = zoo.create_model("resnet20", num_classes=10, in_chans=1).train()
    sd = _attached(model, 0.6)
    dropped: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(sd.blocks))}
    for i, (module,) in enumerate(sd.blocks):
        module.register_forward_hook(
            lambda m, inp, out, i=i: dropped[i].append(
                (out.flatten(1) == 0).all(1) & (inp[0].flatten(1) != 0).any(1)
            )
        )
    n = 0
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(500, 1, 8, 8))
            n += 500
    for i, rate in enumerate(sd.rates):
        share = torch.cat(dropped[i]).float().mean().item()
        tolerance = 4 * math.sqrt(rate * (1 - rate) / n)  # 4 standard deviations of a binomial share
        assert abs(share - rate) < tolerance, (i, share, rate)


def test_eval_runs_the_whole_network_deterministically():
    torch.manual_seed(0)
    model = zoo.create_model("resnet20", num_classes=10, in_chans=1)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        full = model.eval()(x)  # rates still 0: every branch runs
        sd = _attached(model, 0.9)
        assert max(sd.rates) == pytest.approx(0.9)
        first, second = model(x), model(x)
        assert torch.equal(first, second) and torch.equal(first, full)
        model.train()
        assert not torch.equal(model(x), model(x))  # the same rates do drop branches in training


def test_timm_backbone_gets_its_drop_path_modules_set():
    model = zoo.create_model("timm/test_vit", num_classes=10)  # built at rate 0: nn.Identity stand-ins
    assert not any(isinstance(m, DropPath) for m in model.modules())
    sd = _attached(model, 0.3)
    assert len(sd.blocks) == len(model.blocks)
    for block, rate in zip(model.blocks, depth_rates(0.3, len(model.blocks))):
        assert isinstance(block.drop_path1, DropPath) and isinstance(block.drop_path2, DropPath)
        assert block.drop_path1.drop_prob == block.drop_path2.drop_prob == pytest.approx(rate)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), model(x))
        assert not torch.equal(model.train()(x), model(x))

    # built at rate 0: drop_path None in each block (and each branch's last BN not zeroed, so a drop shows)
    plain = zoo.create_model("timm/test_resnet", num_classes=10, zero_init_last=False)
    sd = _attached(plain, 0.45)
    rates = [0.1125, 0.225, 0.3375, 0.45]  # (l/L)·r, L = 4
    assert [b[0].drop_prob for b in sd.blocks] == pytest.approx(rates)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), plain(x))
        assert not torch.equal(plain.train()(x), plain(x))


def test_model_without_residual_branches_is_a_clear_error():
    with pytest.raises(ValueError, match="ConvNet has no residual branches"):
        StochasticDepth(0.5).attach(zoo.create_model("convnet", num_classes=10))
    with pytest.raises(ValueError, match="drop_path_rate=1.0 must be in"):
        StochasticDepth(1.0)
    with pytest.raises(ValueError, match="unknown rule 'exp'"):
        StochasticDepth(0.5, rule="exp")


def test_rate_ramps_over_epochs_and_is_logged(zoo_cli):
    args = ["fit", "--recipe", "digits", "--model.arch", "resnet20", "--model.model_kwargs", "{}"]
    args += ["--model.optimizer.lr", "0.01"]  # 8 steps at the recipe's 0.1 raise the loss: a diverged run
    args += ["--trainer.callbacks+=callbacks.StochasticDepth", "--trainer.callbacks.drop_path_rate", "0.4"]
    args += ["--trainer.callbacks.start_epoch", "1", "--trainer.callbacks.ramp_epochs", "2"]
    args += [
        "--trainer.max_epochs",
        "4",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
    ]
    assert zoo_cli(*args, "--test_after_fit", "false", *FAST_TRAINER) == 0
    with (Path("runs/digits/version_0") / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("stochastic_depth/p_L")]
    by_epoch = {int(r["epoch"]): float(r["stochastic_depth/p_L"]) for r in rows}
    # p_L(e) = 0.4·clip((e − 1 + 1)/2, 0, 1): none in epoch 0, half in epoch 1, all from epoch 2
    assert by_epoch == pytest.approx({0: 0.0, 1: 0.2, 2: 0.4, 3: 0.4})
    mean = {int(r["epoch"]): float(r["stochastic_depth/mean"]) for r in rows}
    assert mean[3] == pytest.approx(sum(depth_rates(0.4, 9)) / 9)


# --- one way: the callback ----------------------------------------------------------------------------------------


def block_rates(model) -> list[float]:
    """Each block's drop rate in depth order, 0 where timm built a stand-in (``nn.Identity`` or ``None``)."""
    rates = []
    for block in model.modules():
        names = sorted(n for n in {*dict(block.named_children()), *vars(block)} if STAND_IN.fullmatch(n))
        for name in names:
            module = getattr(block, name)
            rates.append(module.drop_prob if isinstance(module, DropPath) else 0.0)
    return rates


@pytest.mark.parametrize(
    "arch", ["resnet20", "timm/test_resnet", "timm/test_vit", "timm/test_convnext", "timm/test_efficientnet"]
)
def test_the_retired_model_option_names_the_callback_that_gives_its_rates(arch):
    model = ImageClassifier(arch=arch, num_classes=10, drop_path_rate=0.3)
    model.setup("validate")  # evaluation reads it from a checkpoint without a word: it drops nothing
    with pytest.raises(ZooError) as refused:
        model.setup("fit")
    message = str(refused.value)
    assert "--trainer.callbacks+=callbacks.StochasticDepth --trainer.callbacks.drop_path_rate 0.3" in message
    rule = re.search(r"--trainer\.callbacks\.rule (\w+)", message)
    sd = StochasticDepth(0.3, rule=rule.group(1) if rule else "huang")
    sd.attach(model.model)  # built at rate 0: timm's stand-ins (a ResNet's None) become DropPath modules
    sd.set_rates(0.3)
    fixed = zoo.create_model(arch, num_classes=10, drop_path_rate=0.3)  # the rates timm fixes at construction
    assert max(block_rates(fixed)) > 0
    assert block_rates(model.model) == pytest.approx(block_rates(fixed))


def test_the_model_option_is_refused_in_a_run_and_read_from_an_old_checkpoint(zoo_cli, capsys):
    tiny = ["--model.arch", "resnet20", "--model.model_kwargs", "{}", "--trainer.max_epochs", "1"]
    tiny += ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", *FAST_TRAINER]
    with pytest.raises(SystemExit) as refused:
        zoo_cli("fit", "--recipe", "digits", *tiny, "--model.drop_path_rate", "0.1")
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.drop_path_rate 0.1: ") and len(err.strip().splitlines()) == 1, err
    assert "--trainer.callbacks+=callbacks.StochasticDepth --trainer.callbacks.drop_path_rate 0.1" in err

    assert zoo_cli("fit", "--recipe", "digits", *tiny, "--test_after_fit", "false") == 0
    (trained,) = Path("runs/digits").glob("version_*/checkpoints/last.ckpt")  # the refused run left none
    ckpt = torch.load(trained, weights_only=True)
    ckpt["hyper_parameters"]["drop_path_rate"] = 0.2  # as a run with the option wrote it
    torch.save(ckpt, "old.ckpt")
    capsys.readouterr()
    scores = []
    for path in (trained, "old.ckpt"):
        assert zoo_cli("test", "--recipe", "digits", "--ckpt_path", path, *FAST_TRAINER) == 0
        scores.append(re.findall(r"test/top1\s+│?\s*([0-9.]+)", capsys.readouterr().out))
    assert scores[0] and scores[1] == scores[0]
    assert zoo_cli("export", "--recipe", "digits", "--ckpt_path", "old.ckpt", "--output", "old.onnx") == 0
    assert Path("old.onnx").is_file()
