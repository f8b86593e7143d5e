"""Optimizer set-up: names and the notes' defaults, their update rules, weight-decay groups, linear scaling."""

from __future__ import annotations

import logging
from typing import get_args

import pytest
import torch
from conftest import FAST_TRAINER
from lightning.pytorch import Trainer
from torch import nn

from zoo import ImageClassifier
from zoo.data import DigitsDataModule
from zoo.training.optim import (
    OPTIMIZERS,
    OptimizerConfig,
    OptimizerName,
    build_optimizer,
    global_batch_size,
    scale_lr,
)
from zoo.training.rmsprop_nesterov import RMSpropNesterov


def _one_param(value=(1.0, -2.0, 3.0)):
    return nn.Parameter(torch.tensor(value, dtype=torch.float64))


def _steps(name, grads, **kw):
    """Run optimizer ``name`` on one parameter with the given gradient sequence; return the trajectory."""
    p = _one_param()
    opt = build_optimizer([p], OptimizerConfig(name=name, **kw))
    out = [p.detach().clone()]
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.detach().clone())
    return out


GRADS = [(0.5, -1.0, 2.0), (0.1, 0.3, -0.7), (-0.4, 0.2, 0.9)]


@pytest.mark.parametrize(
    "name, cls, expected",
    [
        ("sgd", torch.optim.SGD, dict(lr=0.1, momentum=0.0, nesterov=False)),
        ("momentum", torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=False)),
        ("nesterov", torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
        ("adagrad", torch.optim.Adagrad, dict(lr=0.01, eps=1e-10)),
        ("rmsprop", torch.optim.RMSprop, dict(lr=1e-3, alpha=0.9, eps=1e-8)),
        ("rmsprop_nesterov", RMSpropNesterov, dict(lr=1e-3, alpha=0.9, momentum=0.9)),
        ("adam", torch.optim.Adam, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)),
        ("adamw", torch.optim.AdamW, dict(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01)),
        ("lbfgs", torch.optim.LBFGS, dict(lr=1.0, line_search_fn="strong_wolfe")),
    ],
)
def test_each_name_builds_torchs_optimizer_with_the_notes_defaults(name, cls, expected):
    opt = build_optimizer(nn.Linear(3, 2), OptimizerConfig(name=name))
    assert type(opt) is cls
    group = next(g for g in opt.param_groups if g["name"] == "model")  # the group with weight decay
    for key, value in expected.items():
        assert group[key] == value, key


def test_sgd_momentum_follows_the_notes():
    beta, lr = 0.9, 0.1
    traj = _steps("momentum", GRADS)
    w, v = _one_param().detach(), torch.zeros(3, dtype=torch.float64)
    for g, got in zip(GRADS, traj[1:]):
        v = beta * v + torch.tensor(g, dtype=torch.float64)  # v ← βv + ∇L
        w = w - lr * v  # W ← W − αv
        torch.testing.assert_close(got, w, rtol=1e-12, atol=0)


def test_adagrad_and_rmsprop_follow_the_notes():
    for name, decay in (("adagrad", None), ("rmsprop", 0.9)):
        traj = _steps(name, GRADS, lr=0.05, eps=1e-6)
        w, m = _one_param().detach(), torch.zeros(3, dtype=torch.float64)
        for g, got in zip(GRADS, traj[1:]):
            g = torch.tensor(g, dtype=torch.float64)
            m = m + g**2 if decay is None else decay * m + (1 - decay) * g**2
            w = w - 0.05 / (m.sqrt() + 1e-6) * g  # W ← W − α/(√m + ε)·∂L/∂W
            torch.testing.assert_close(got, w, rtol=1e-12, atol=0, msg=name)


def test_adam_is_bias_corrected():
    traj = _steps("adam", GRADS)
    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8
    w, m, s = _one_param().detach(), torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for t, (g, got) in enumerate(zip(GRADS, traj[1:]), start=1):
        g = torch.tensor(g, dtype=torch.float64)
        m, s = b1 * m + (1 - b1) * g, b2 * s + (1 - b2) * g**2
        w = w - lr * (m / (1 - b1**t)) / ((s / (1 - b2**t)).sqrt() + eps)
        torch.testing.assert_close(got, w, rtol=1e-12, atol=0)
    # bias correction makes the first step ≈ lr in every coordinate, whatever the gradient's scale
    torch.testing.assert_close(
        (traj[0] - traj[1]).abs(), torch.full((3,), lr, dtype=torch.float64), rtol=1e-6, atol=0
    )


def test_rmsprop_nesterov_follows_algorithm_8_6():
    """The literal algorithm, gradient taken at the interim point θ + αv, on f(θ) = ½θᵀAθ − bᵀθ."""
    A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.3]], dtype=torch.float64)
    b = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    grad = lambda x: A @ x - b  # noqa: E731
    lr, rho, alpha, delta = 0.01, 0.9, 0.9, 1e-8

    theta, v, r = (
        _one_param().detach().clone(),
        torch.zeros(3, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
    )
    p = _one_param()
    opt = RMSpropNesterov([p], lr=lr, alpha=rho, eps=delta, momentum=alpha)
    for _ in range(30):  # near the optimum g/√r is sign-like and amplifies rounding, so stop before
        g = grad(theta + alpha * v)  # interim update θ̃ = θ + αv, gradient there
        r = rho * r + (1 - rho) * g * g
        v = alpha * v - lr / (r.sqrt() + delta) * g
        theta = theta + v

        p.grad = grad(p.detach())  # ours holds θ + αv, so the plain gradient is the algorithm's
        opt.step()
        torch.testing.assert_close(p.detach(), theta + alpha * v, rtol=1e-12, atol=0)
    assert torch.linalg.norm(grad(theta)) < 0.5 * torch.linalg.norm(grad(_one_param().detach()))


def test_weight_decay_skips_biases_and_norm_weights_unless_asked():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    opt = build_optimizer(model, OptimizerConfig(name="momentum", weight_decay=5e-4))
    by_name = {g["name"]: g for g in opt.param_groups}
    decayed = {id(p) for p in by_name["model"]["params"]}
    assert by_name["model"]["weight_decay"] == 5e-4 and by_name["model/no_decay"]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    assert len(by_name["model/no_decay"]["params"]) == 4  # conv bias, BN weight and bias, linear bias

    opt = build_optimizer(
        model, OptimizerConfig(name="momentum", weight_decay=5e-4, decay_norm_and_bias=True)
    )
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 5e-4
    assert len(opt.param_groups[0]["params"]) == 6


def test_param_groups_keep_their_lr_scale():
    class Backbone01(ImageClassifier):
        def param_groups(self):
            return [
                {"name": "backbone", "params": self.model.features, "lr_scale": 0.1},
                {"name": "head", "params": self.model.fc, "lr_scale": 1.0},
            ]

    model = Backbone01(num_classes=10, in_chans=1, model_kwargs={"widths": [4], "depth": 1})
    opt = build_optimizer(model.param_groups(), OptimizerConfig(name="nesterov", lr=0.2, weight_decay=1e-4))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx(
        {"backbone": 0.02, "backbone/no_decay": 0.02, "head": 0.2, "head/no_decay": 0.2}
    )


def test_linear_scaling_rule():
    assert scale_lr(0.1, 256, 128) == 0.2 and scale_lr(0.1, 512, 128) == pytest.approx(0.4)
    dm = DigitsDataModule(batch_size=32)
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", accumulate_grad_batches=2, logger=False)
    assert global_batch_size(trainer, dm) == 32 * 2 * 2
    dm_full = DigitsDataModule(batch_size=0)
    dm_full.setup("fit")
    single = Trainer(accelerator="cpu", devices=1, logger=False)
    assert global_batch_size(single, dm_full) == len(dm_full.splits["train"])


def test_linear_scaling_in_a_real_run_says_so_once(caplog):
    optimizer = OptimizerConfig(name="momentum", lr=0.1, reference_batch_size=16)
    model = ImageClassifier(
        num_classes=10, in_chans=1, model_kwargs={"widths": [4], "depth": 1}, optimizer=optimizer
    )
    trainer = Trainer(max_steps=2, accumulate_grad_batches=2, limit_val_batches=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with caplog.at_level(logging.INFO):
        trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.4, rel=1e-12)  # 0.1 × 64/16
    messages = [r.getMessage() for r in caplog.records if "scaling" in r.getMessage()]
    assert messages == ["Linear scaling rule: lr 0.1 @ 16 → 0.4 @ 64"]


def test_optimizer_chosen_on_the_command_line(tmp_path):
    from recipes.cli import run_lightning

    cli = run_lightning(
        ["fit", "--recipe", "digits", *FAST_TRAINER, "--trainer.fast_dev_run", "1", "--test_after_fit", "false",
         "--model.optimizer.name", "adam", "--model.optimizer.lr", "2e-4", "--model.optimizer.weight_decay", "0"]
    )  # fmt: skip
    opt = cli.trainer.optimizers[0]
    assert type(opt) is torch.optim.Adam
    assert opt.param_groups[0]["base_lr"] == 2e-4 and opt.param_groups[0]["betas"] == (0.9, 0.999)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="adamm"), r"unknown optimizer name 'adamm' \(did you mean 'adam' or 'adamw'\?\)"),
        (dict(name="momentum", lr=-0.1), r"optimizer.lr=-0.1 must be a positive"),
        (dict(name="adam", lr=float("nan")), r"optimizer.lr=nan"),
        (dict(name="rmsprop", alpha=1.2), r"optimizer.alpha=1.2 must be in \[0, 1\)"),
        (dict(name="sgd", nesterov=True), r"optimizer.nesterov=True must be used with a momentum > 0"),
        (dict(name="adam", reference_batch_size=0), r"reference_batch_size=0"),
    ],
)
def test_bad_optimizer_settings_are_errors_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(**kwargs)


def test_options_of_another_optimizer_are_ignored_with_a_warning():
    with pytest.warns(UserWarning, match=r"optimizer 'adam' ignores momentum=0.9; its options are lr, betas"):
        config = OptimizerConfig(name="adam", momentum=0.9)
    assert "momentum" not in config.resolved()
    assert "momentum" not in build_optimizer(nn.Linear(2, 2), config).defaults


def test_unknown_optimizer_key_in_a_checkpoint_dict_is_named():
    with pytest.raises(ValueError, match=r"unknown optimizer option\(s\) beta1"):
        OptimizerConfig.from_dict({"name": "adam", "beta1": 0.9})


def test_unknown_optimizer_on_the_command_line_names_the_value(capsys):
    from recipes.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--recipe", "digits", "--model.optimizer.name", "adamm", "--trainer.fast_dev_run", "1"])
    err = capsys.readouterr().err
    assert "Got value: adamm" in err and "'rmsprop_nesterov'" in err


def test_the_cli_choices_are_the_factorys_names():
    assert get_args(OptimizerName) == tuple(OPTIMIZERS)
