"""``zoo schedule``: the lr curve of a recipe's whole run, without training, equal to what training does."""

from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path

import pytest
from conftest import FAST_TRAINER

SHORT = [
    "--trainer.max_epochs",
    "3",
    "--trainer.limit_train_batches",
    "5",
    "--trainer.accumulate_grad_batches",
    "2",
]


def _read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_schedule_draws_the_run_and_prints_its_key_points(zoo_cli, capsys):
    assert (
        zoo_cli(
            "schedule",
            "--recipe",
            "digits",
            "--trainer.max_epochs",
            "4",
            "--output",
            "lr.png",
            "--csv",
            "lr.csv",
        )
        == 0
    )
    out = capsys.readouterr().out
    import matplotlib.image

    image = matplotlib.image.imread("lr.png")
    assert image.shape[0] > 200 and image.shape[1] > 400
    rows = _read_csv("lr.csv")
    steps = 4 * 17  # 1,077 training digits in batches of 64
    assert len(rows) == steps and rows[-1]["step"] == str(steps - 1)
    cos = lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))  # noqa: E731
    for row in rows:  # the digits recipe: warmup over 1 epoch, then cosine, lr 0.1
        step = int(row["step"])
        assert float(row["model"]) == pytest.approx(0.1 * min(1.0, step / 17) * cos(step), rel=1e-12, abs=0)
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()[:1].isdigit()}
    assert "start" in lines["0"] and "end of warmup" in lines["17"] and "end" in lines[str(steps - 1)]
    assert f"{0.1 * cos(17):.6g}" in lines["17"]


def test_schedule_equals_the_lrs_of_a_real_run(zoo_cli):
    assert zoo_cli("schedule", "--recipe", "digits", *SHORT, "--output", "lr.png", "--csv", "sim.csv") == 0
    simulated = {int(r["step"]): float(r["model"]) for r in _read_csv("sim.csv")}
    assert len(simulated) == 3 * 3  # ceil(5 batches / 2) steps per epoch

    args = [
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--test_after_fit",
        "false",
    ]
    assert zoo_cli("fit", "--recipe", "digits", *SHORT, *args, *FAST_TRAINER) == 0
    (metrics,) = Path("runs/digits").glob("version_*/metrics.csv")
    logged = {int(r["step"]): float(r["lr-SGD/model"]) for r in _read_csv(metrics) if r.get("lr-SGD/model")}
    assert sorted(logged) == list(range(9))
    assert all(logged[s] == pytest.approx(simulated[s], rel=1e-9, abs=0) for s in logged)


def test_schedule_shows_the_linear_scaling_rule(zoo_cli, capsys, caplog):
    with caplog.at_level(logging.INFO):
        code = zoo_cli(
            "schedule",
            "--recipe",
            "digits",
            "--model.optimizer.reference_batch_size",
            "16",
            "--csv",
            "lr.csv",
        )
    assert code == 0 and Path("lr_schedule_digits.png").is_file()
    assert "Linear scaling rule: lr 0.1 @ 16 → 0.4 @ 64" in caplog.text
    peak = max(float(r["model"]) for r in _read_csv("lr.csv"))
    assert peak == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 17 / 510)), rel=1e-12)


def test_schedule_reports_a_warmup_longer_than_the_run(zoo_cli, capsys):
    with pytest.raises(SystemExit) as done:
        zoo_cli("schedule", "--recipe", "digits", "--trainer.max_steps", "10")
    assert done.value.code == 2
    assert re.search(
        r"error: LinearWarmup: warmup=1 epochs .* longer than the whole run", capsys.readouterr().err
    )


def test_schedule_needs_a_recipe(zoo_cli, capsys):
    with pytest.raises(SystemExit) as done:
        zoo_cli("schedule", "--output", "x.png")
    assert done.value.code == 2
    assert "error: zoo schedule needs --recipe NAME or --config FILE" in capsys.readouterr().err


def test_imagenet_schedule_without_imagenet_counts_steps_from_its_known_size(zoo_cli, capsys):
    """No ImageNet on this machine: 1,281,167 training images in global batches of 32 × 8 devices."""
    assert (
        zoo_cli("schedule", "--recipe", "imagenet-resnet50-step", "--output", "in.png", "--csv", "in.csv")
        == 0
    )
    out = capsys.readouterr().out
    assert "no data here (give --data.root" in out
    assert "ImageNetDataModule's 1,281,167 training images in global batches of 256 (32 × 8)" in out
    steps = 1_281_167 // 8 // 32  # each of 8 processes takes 160,146 images: 5,004 full batches
    assert f"{90 * steps} optimizer steps = 90 epochs × {steps} steps" in out
    assert Path("in.png").stat().st_size > 10_000
    lrs = [float(r["model"]) for r in _read_csv("in.csv")]
    assert len(lrs) == 90 * steps
    # 5 epochs of linear warmup from 0 to 0.1 (256 images: no scaling), ×0.1 at epochs 30, 60 and 80
    assert lrs[0] == 0 and lrs[5 * steps] == pytest.approx(0.1)
    for epoch, lr in ((29, 0.1), (30, 0.01), (59, 0.01), (60, 1e-3), (80, 1e-4), (89, 1e-4)):
        assert lrs[epoch * steps + 1] == pytest.approx(lr), epoch


def test_cifar_schedule_without_the_download_holds_out_the_validation_share(zoo_cli, capsys, tmp_path):
    args = ("--data.init_args.download", "false", "--data.init_args.root", tmp_path / "none")
    assert zoo_cli("schedule", "--recipe", "cifar10-resnet56", *args, "--output", "c.png") == 0
    out = capsys.readouterr().out
    assert "CIFARDataModule's 45,000 training images in global batches of 128 (128 × 1)" in out
    # He et al.: ×0.1 at 32k and 48k iterations, end at 64k, whatever the steps of an epoch
    assert "64000 optimizer steps = 182.336 epochs × 351 steps" in out
    assert re.search(r"\n +32000 +91\.168 +0\.01 +multi-step decay ×0\.1\^1\n", out)
    assert re.search(r"\n +48000 +136\.752 +0\.001 +multi-step decay ×0\.1\^2\n", out)
    assert re.search(r"\n +63999 +182\.333 +0\.001 +end\n", out)


def test_cifar_schedule_in_iterations_keeps_the_papers_steps_on_all_50000_images(zoo_cli, capsys, tmp_path):
    """The paper's setting (no validation split): more steps an epoch, the same iterations."""
    args = ("--data.init_args.download", "false", "--data.init_args.root", tmp_path / "none")
    paper = ("--data.val_fraction", "0")
    assert zoo_cli("schedule", "--recipe", "cifar10-resnet56", *args, *paper, "--output", "c.png") == 0
    out = capsys.readouterr().out
    assert "64000 optimizer steps = 164.103 epochs × 390 steps" in out
    assert re.search(r"\n +32000 +82\.051 +0\.01 +multi-step decay", out)


def test_resnet110_recipe_warms_up_at_001_for_400_iterations(zoo_cli, capsys, tmp_path):
    """He et al. 2016: lr 0.01 for about 400 iterations, then 0.1, ×0.1 at 32k and 48k, 64k in all."""
    args = ("--data.init_args.download", "false", "--data.init_args.root", tmp_path / "none")
    assert (
        zoo_cli("schedule", "--recipe", "cifar10-resnet110", *args, "--output", "r.png", "--csv", "r.csv")
        == 0
    )
    out = capsys.readouterr().out
    assert "schedules: ConstantWarmup, MultiStepDecay" in out
    assert re.search(r"\n +400 +1\.140 +0\.1 +end of warmup\n", out)
    lrs = [float(r["model"]) for r in _read_csv("r.csv")]
    rule = [0.1 * (0.1 if k < 400 else 1) * 0.1 ** ((k >= 32_000) + (k >= 48_000)) for k in range(64_000)]
    assert lrs == pytest.approx(rule, rel=1e-12)
