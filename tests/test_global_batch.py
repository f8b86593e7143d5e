"""The global batch and the linearly scaled lr count every device of every node (and accumulation): a run on
4 nodes of 8 GPUs at 32 images each steps with 1,024 images at 4 × the lr stated for 256."""

from __future__ import annotations

import csv
import math

import pytest
from lightning.pytorch import Trainer

from zoo.data import DigitsDataModule
from zoo.models.registry import create_model
from zoo.training.optim import OptimizerConfig, build_optimizer, global_batch_size


@pytest.mark.parametrize("nodes, devices, accumulate", [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 1, 3)])
def test_global_batch_and_scaled_lr_count_nodes_devices_and_accumulation(nodes, devices, accumulate):
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        num_nodes=nodes,
        strategy="ddp" if nodes * devices > 1 else "auto",
        accumulate_grad_batches=accumulate,
        logger=False,
    )
    assert trainer.num_nodes == nodes and trainer.num_devices == devices
    batch = global_batch_size(trainer, DigitsDataModule(batch_size=16))
    assert batch == 16 * devices * nodes * accumulate
    config = OptimizerConfig(name="momentum", lr=0.1, reference_batch_size=32)
    net = create_model("convnet", num_classes=10, in_chans=1, widths=[4], depth=1)
    optimizer = build_optimizer(net, config, global_batch=batch)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * batch / 32, rel=1e-12)


def test_schedule_of_a_four_node_imagenet_run(zoo_cli, capsys):
    """imagenet-resnet50-step on 4 nodes: 1,024 images a step → lr 0.4 after warmup, 1,251 steps an epoch."""
    args = ("--trainer.num_nodes", "4", "--trainer.max_epochs", "6", "--output", "lr.png", "--csv", "lr.csv")
    assert zoo_cli("schedule", "--recipe", "imagenet-resnet50-step", *args) == 0
    out = capsys.readouterr().out
    assert "global batches of 1,024 (32 × 32)" in out
    per_rank = math.ceil(1_281_167 / 32)  # DistributedSampler: each of 32 processes, then full batches of 32
    steps = per_rank // 32
    assert steps == 1251 and f"6 epochs × {steps} steps" in out
    with open("lr.csv") as f:
        lrs = [float(r["model"]) for r in csv.DictReader(f)]
    assert max(lrs) == pytest.approx(0.1 * 1024 / 256)  # the header's "4 nodes → 0.4"
    assert lrs[5 * steps] == pytest.approx(0.4)  # end of the 5-epoch warmup
