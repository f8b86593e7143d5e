"""L-BFGS in full-batch mode (the notes: for small problems) through the real recipe, CLI and Lightning loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST_TRAINER
from torch import nn

from recipes.cli import run_lightning
from zoo.training.optim import OptimizerConfig, build_optimizer


def test_full_batch_lbfgs_converges_on_digits():
    cli = run_lightning(
        [
            "fit",
            "--recipe",
            "digits_lbfgs",
            *FAST_TRAINER,
            "--test_after_fit",
            "false",
            "--trainer.max_epochs",
            "5",
        ]
    )
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    opt = trainer.optimizers[0]
    assert type(opt) is torch.optim.LBFGS
    assert trainer.global_step == 5  # the whole training split is one batch: one step per epoch
    state = opt.state[opt._params[0]]
    # Lightning's automatic optimisation handed L-BFGS a closure it re-evaluated many times per step
    assert state["func_evals"] >= state["n_iter"] > 5 * trainer.global_step

    model.eval()
    with torch.no_grad():
        (x, y), (xt, yt) = (next(iter(loader)) for loader in (dm.train_dataloader(), dm.test_dataloader()))
        assert len(x) == len(dm.splits["train"])
        train_loss = F.cross_entropy(model(x), y).item()
        test_top1 = (model(xt).argmax(-1) == yt).float().mean().item()
    assert train_loss < 0.05, train_loss
    assert test_top1 >= 0.97, test_top1


def test_lbfgs_warns_about_noise_it_cannot_handle():
    args = [
        "fit",
        "--recipe",
        "digits",
        *FAST_TRAINER,
        "--trainer.fast_dev_run",
        "1",
        "--test_after_fit",
        "false",
    ]
    with pytest.warns(
        UserWarning, match=r"dropout in .*model.drop_rate: 0.*data.augment: false.*batch_size: 0"
    ):
        run_lightning([*args, "--model.optimizer.name", "lbfgs", "--model.optimizer.lr", "1"])


def test_lbfgs_takes_one_group_only():
    groups = [
        {"name": "backbone", "params": nn.Linear(2, 2), "lr_scale": 0.1},
        {"name": "head", "params": nn.Linear(2, 2), "lr_scale": 1.0},
    ]
    with pytest.raises(ValueError, match=r"L-BFGS takes one parameter group.*lr_scale \[0.1, 1.0\]"):
        build_optimizer(groups, OptimizerConfig(name="lbfgs"))
