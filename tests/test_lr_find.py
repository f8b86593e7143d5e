"""``zoo lr-find``: the range test's reading of a curve, the param groups' ratios, the linear probe, and digits."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_TRAINER
from PIL import Image

from zoo.tools.lr_range import RangeTest, read_curve

QUICK = ("--data.num_workers", "0", *FAST_TRAINER)


def sweep(n: int = 100, low: float = 1e-6, high: float = 10.0) -> list[float]:
    return [low * (high / low) ** (t / (n - 1)) for t in range(n)]


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --- reading the curve ------------------------------------------------------------------------------------------


def test_suggestion_is_the_steepest_fall_against_log_lr():
    lrs = sweep()
    centre = -1.5  # log10 of the lr where L = 2.3 − tanh((log10 lr − centre) / 0.7) falls fastest
    losses = [2.3 - math.tanh((math.log10(lr) - centre) / 0.7) for lr in lrs]
    losses[-5:] = [5.0, 8.0, 12.0, 20.0, float("nan")]  # the sweep's explosion at the end
    reading = read_curve(lrs, losses)
    assert (
        reading.lr is not None and abs(math.log10(reading.lr) - centre) <= 0.08
    )  # within a step of the sweep
    assert reading.index == lrs.index(reading.lr)


def test_flat_curve_gives_no_suggestion():
    lrs = sweep()
    losses = [2.30 - 0.05 * t / 100 for t in range(100)]  # 2% lower at the end
    reading = read_curve(lrs, losses)
    assert reading.lr is None and reading.why.startswith("the curve is too flat")


def test_noisy_curve_gives_no_suggestion():
    rng = np.random.default_rng(0)
    lrs = sweep()
    losses = [2.3 - 0.5 * t / 100 + rng.normal(0, 0.3) for t in range(100)]
    reading = read_curve(lrs, losses)
    assert reading.lr is None and reading.why.startswith("the curve is too noisy")


def test_a_sweep_that_stopped_early_gives_no_suggestion():
    reading = read_curve(sweep()[:15], [2.3] * 15)
    assert reading.lr is None and "too few points" in reading.why


def test_the_sweep_is_exponential_from_min_to_max():
    test = RangeTest(1e-5, 1.0, 21)
    assert [test.lr_at(t) for t in (0, 10, 20)] == pytest.approx([1e-5, 1e-5 * 10**2.5, 1.0])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--min_lr", "1", "--max_lr", "0.1"], "need 0 < min_lr < max_lr"),
        (["--steps", "5"], "at least 20 steps"),
        (["--min_lr", "-1"], "expected a number > 0"),
    ],
)
def test_bad_options_are_one_error_line(zoo_cli, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        zoo_cli("lr-find", "--recipe", "digits", *args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_lbfgs_recipe_is_refused(zoo_cli, capsys):
    with pytest.raises(SystemExit) as exit_:
        zoo_cli("lr-find", "--recipe", "digits_lbfgs", *QUICK)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "L-BFGS" in err and "Traceback" not in err


# --- on real recipes --------------------------------------------------------------------------------------------


def test_param_groups_keep_their_ratio(zoo_cli, capsys, tmp_path):
    """A backbone at 0.1× stays at 0.1× of the head through the whole sweep, and the head is the swept lr."""
    args = ["--model.backbone_lr_scale", "0.1", "--steps", "20", "--min_lr", "1e-4", "--max_lr", "1"]
    args += ["--data.batch_size", "16"]
    assert zoo_cli("lr-find", "--recipe", "digits", *args, "--output", tmp_path / "out", *QUICK) == 0
    table = rows(tmp_path / "out" / "lr_find.csv")
    assert len(table) == 20
    for t, row in enumerate(table):
        lr = float(row["lr"])
        assert lr == pytest.approx(1e-4 * 1e4 ** (t / 19))
        assert float(row["lr[head]"]) == pytest.approx(lr)
        assert float(row["lr[backbone]"]) == pytest.approx(0.1 * lr)
        assert float(row["lr[backbone/no_decay]"]) == pytest.approx(0.1 * lr)
    assert "(param groups: head ×1, backbone ×0.1)" in capsys.readouterr().out


@pytest.mark.slow
def test_finetune_sweeps_from_the_linear_probes_head(zoo_cli, capsys, tmp_path):
    """The probe is a phase before the first step: the sweep starts after it, with the fine-tuning's groups."""
    from test_finetune import make_folder

    root = make_folder(tmp_path / "pets", per_class=8)
    args = ["--recipe", "finetune", "--data.root", root, "--model.pretrained", "false"]
    args += ["--model.pretrained_path", "efficientnet-lite0-pypi", "--finetune.strategy", "freeze_unfreeze"]
    args += [
        "--data.image_size",
        "32",
        "--data.batch_size",
        "4",
        "--steps",
        "20",
        "--max_lr",
        "1e-3",  # AdamW: below where a sweep of 20 steps would blow up and stop early
        "--output",
        tmp_path / "out",
    ]
    assert zoo_cli("lr-find", *args, *QUICK) == 0
    out = capsys.readouterr().out
    assert "lr range test after the linear probe" in out, out
    assert "(param groups: head ×0.1, backbone ×0.1)" in out  # the fitted head trains at the backbone's lr
    table = rows(tmp_path / "out" / "lr_find.csv")
    raw = [float(r["raw_loss"]) for r in table]
    assert len(table) == 20 and all(v > 0 for v in raw)
    assert len(set(raw)) > 10  # the weights moved


def test_linear_probe_alone_has_nothing_to_sweep(zoo_cli, capsys, tmp_path):
    from test_finetune import make_folder

    root = make_folder(tmp_path / "pets", per_class=8)
    args = ["--recipe", "finetune", "--data.root", root, "--model.pretrained", "false"]
    args += ["--model.pretrained_path", "efficientnet-lite0-pypi", "--finetune.strategy", "linear"]
    with pytest.raises(SystemExit) as exit_:
        zoo_cli("lr-find", *args, "--data.image_size", "32", *QUICK)
    assert exit_.value.code == 2
    assert "takes no optimizer step" in capsys.readouterr().err


def _colour_pixels(png: Path, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).max(-1) <= tolerance).sum())


@pytest.mark.slow
def test_digits_suggests_an_lr_near_the_tuned_one(zoo_cli, capsys):
    """The recipe's lr, 0.1, was tuned by hand: the range test's suggestion is within 10× of it."""
    assert zoo_cli("lr-find", "--recipe", "digits", *QUICK) == 0
    out = capsys.readouterr().out
    found = re.search(r"^suggested lr: (\S+)\n  --model\.optimizer\.lr (\S+)$", out, re.M)
    assert found, out
    lr = float(found.group(1))
    assert found.group(2) == found.group(1) and 0.01 <= lr <= 1.0
    png = Path(re.search(r"^plot: (\S+)", out, re.M).group(1))
    assert png == Path("runs/digits/lr_find/version_0/lr_find.png") and png.stat().st_size > 20_000
    assert _colour_pixels(png, (0x1F, 0x77, 0xB4)) > 500  # the curve (matplotlib's C0)
    assert _colour_pixels(png, (0xD6, 0x27, 0x28)) > 50  # the suggested point (C3)
    table = rows(png.with_suffix(".csv"))
    assert 20 <= len(table) <= 100 and float(table[0]["lr"]) == pytest.approx(1e-6)
