"""Snapshot ensembles: the cyclic cosine lr (against torch's warm restarts and the logged lr of a real run),
M snapshots at the cycle ends, the ensemble's table, warmup, and clear errors."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER

from callbacks import CosineDecay, LinearWarmup, SnapshotEnsemble
from callbacks.lr_schedule import simulate
from zoo.tools.ensemble import read_checkpoint


def _sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_lr_is_the_papers_cyclic_cosine_and_torchs_warm_restarts():
    spe, total, cycles = 7, 70, 5  # 10 epochs of 7 steps, cycles of 2 epochs = 14 steps
    lrs = [row[0] for row in simulate([SnapshotEnsemble(cycles)], _sgd(0.2), spe, total)]
    T_M = total / cycles
    closed = [0.2 / 2 * (math.cos(math.pi * (t % T_M) / T_M) + 1) for t in range(total)]
    assert lrs == pytest.approx(closed, abs=1e-12)
    opt = _sgd(0.2)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=14)
    reference = []
    for _ in range(total):
        reference.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_sched.step()
    assert lrs == pytest.approx(reference, abs=1e-12)


def test_cycles_begin_after_a_warmup_given_as_start():
    schedules = [LinearWarmup(2), SnapshotEnsemble(4, start=2)]
    lrs = [row[0] for row in simulate(schedules, _sgd(0.1), 10, 100)]  # 10 epochs: 2 warmup + 4 cycles of 2
    assert lrs[:20] == pytest.approx([0.1 * s / 20 for s in range(20)])
    assert [lrs[s] for s in (20, 40, 60, 80)] == pytest.approx([0.1] * 4)  # restarts after the warmup
    assert schedules[1].cycle_ends() == [40, 60, 80, 100]


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory):
    """The shipped snapshot recipe for 5 epochs of 8 steps: 5 cycles of one epoch, the lr logged every step."""
    import os

    from recipes.cli import main

    where = tmp_path_factory.mktemp("snapshot")
    cwd = os.getcwd()
    os.chdir(where)
    try:
        args = ["fit", "--recipe", "digits_snapshot", "--trainer.max_epochs", "5"]
        args += ["--trainer.limit_train_batches", "8", "--trainer.log_every_n_steps", "1"]
        assert main([*args, "--test_after_fit", "false", *FAST_TRAINER]) == 0
    finally:
        os.chdir(cwd)
    return where, where / "runs" / "digits_snapshot" / "version_0"


def test_saves_exactly_m_snapshots_at_the_cycle_ends(snapshot_run):
    _, run = snapshot_run
    files = sorted((run / "snapshots").glob("*.ckpt"))
    assert [f.name for f in files] == [f"snapshot-0{m}.ckpt" for m in range(1, 6)]
    steps = [read_checkpoint(f)["global_step"] for f in files]
    assert steps == [8, 16, 24, 32, 40]
    first, last = (read_checkpoint(f)["state_dict"] for f in (files[0], files[-1]))
    assert not torch.equal(first["model.fc.weight"], last["model.fc.weight"])


def test_logged_lr_restarts_at_each_cycle_start(snapshot_run):
    _, run = snapshot_run
    with (run / "metrics.csv").open() as f:
        lr = {int(r["step"]): float(r["lr-SGD/model"]) for r in csv.DictReader(f) if r.get("lr-SGD/model")}
    assert sorted(lr) == list(range(40))
    for start in (8, 16, 24, 32):  # each cycle starts again at α0 = 0.1 after decaying to near 0
        assert lr[start] == pytest.approx(0.1)
        if start > 8:  # the first cycle ends under the warmup (below)
            assert lr[start - 1] == pytest.approx(0.05 * (math.cos(math.pi * 7 / 8) + 1))
    # the first cycle is also under the 1-epoch warmup: lr = 0.1·(s/8)·cos-factor
    assert [lr[s] for s in range(8)] == pytest.approx(
        [0.1 * s / 8 * 0.5 * (math.cos(math.pi * s / 8) + 1) for s in range(8)]
    )


def test_table_scores_each_snapshot_and_the_ensemble_as_zoo_ensemble_does(snapshot_run, zoo_cli, capsys):
    where, run = snapshot_run
    with (run / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("snapshot/val_top1/ensemble")]
    assert len(rows) == 1
    logged = {k.rsplit("/", 1)[-1]: float(v) for k, v in rows[0].items() if k.startswith("snapshot/") and v}
    assert set(logged) == {"1", "2", "3", "4", "5", "ensemble"}
    assert logged["ensemble"] > 0.7  # 40 steps in all: far above chance (0.1)
    files = sorted(str(p) for p in (run / "snapshots").glob("*.ckpt"))
    assert zoo_cli("ensemble", "--recipe", "digits_snapshot", "--ckpt", *files, "--json", "s.json") == 0
    scores = json.loads(Path("s.json").read_text())
    assert scores["ensemble of 5"]["val"]["top1"] == pytest.approx(logged["ensemble"], abs=1e-6)
    for m, path in enumerate(files, 1):
        assert scores[path]["val"]["top1"] == pytest.approx(logged[str(m)], abs=1e-6)
    assert "ensemble of 5" in capsys.readouterr().out


def test_another_decay_or_too_many_cycles_is_a_clear_error(zoo_cli, capsys):
    from lightning.pytorch import Trainer

    from zoo.data import DigitsDataModule
    from zoo.training.module import ImageClassifier

    trainer = Trainer(callbacks=[SnapshotEnsemble(3), CosineDecay()], max_epochs=3, logger=False)
    with pytest.raises(ValueError, match="also has CosineDecay: remove them"):
        trainer.fit(ImageClassifier(in_chans=1), DigitsDataModule())
    args = [
        "fit",
        "--recipe",
        "digits_snapshot",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "4",
    ]
    with pytest.raises(SystemExit) as done:  # a user's mistake: one error line, exit 2
        zoo_cli(*args, *FAST_TRAINER)
    assert done.value.code == 2
    assert re.search(
        r"5 cycles in a run of 1 epochs .* leave fewer than 2 steps per cycle", capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="last=6 must be between 1 and cycles=5"):
        SnapshotEnsemble(5, last=6)


def test_state_is_in_the_checkpoint(snapshot_run):
    _, run = snapshot_run
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("SnapshotEnsemble"))
    assert [Path(p).name for p in state["snapshots"]] == [f"snapshot-0{m}.ckpt" for m in range(1, 6)]
    restored = SnapshotEnsemble(5)
    restored.load_state_dict(state)
    assert restored.snapshots == state["snapshots"] and restored.total_steps == 40


def _val_by_epoch(run: Path) -> dict[int, float]:
    with (run / "metrics.csv").open() as f:
        return {int(r["epoch"]): float(r["val/top1"]) for r in csv.DictReader(f) if r.get("val/top1")}


def _snapshot_scores(run: Path) -> dict[str, float]:
    with (run / "metrics.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r.get("snapshot/val_top1/ensemble"))
    return {k.rsplit("/", 1)[-1]: float(v) for k, v in row.items() if k.startswith("snapshot/") and v}


def test_each_snapshot_scores_what_the_validation_after_it_logged(snapshot_run):
    _, run = snapshot_run  # cycles of one epoch: snapshot m is the model validated at the end of epoch m − 1
    val, snaps = _val_by_epoch(run), _snapshot_scores(run)
    assert [snaps[str(m)] for m in range(1, 6)] == pytest.approx([val[e] for e in range(5)], abs=1e-6)


@pytest.mark.slow
def test_ddp_with_precise_bn_snapshots_hold_the_validated_statistics(tmp_path):
    """Two CPU processes (gloo); PreciseBN's statistics, averaged over them, are in every snapshot."""
    import subprocess
    import sys

    zoo = Path(sys.executable).with_name("zoo")
    args = [str(zoo), "fit", "--recipe", "digits_snapshot", "--trainer.max_epochs", "5"]
    args += ["--trainer.limit_train_batches", "4", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    args += [
        "--trainer.strategy",
        "ddp",
        "--trainer.callbacks+=callbacks.PreciseBN",
        "--test_after_fit",
        "false",
    ]
    done = subprocess.run([*args, *FAST_TRAINER], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "digits_snapshot" / "version_0"
    assert len(list((run / "snapshots").glob("snapshot-*.ckpt"))) == 5
    val, snaps = _val_by_epoch(run), _snapshot_scores(run)
    assert [snaps[str(m)] for m in range(1, 6)] == pytest.approx([val[e] for e in range(5)], abs=1e-6)


def test_image_folder_snapshots_are_scored_on_normalised_batches(tmp_path):
    """uint8 image batches are normalised by the data module's transfer hook before the snapshots score them:
    each snapshot scores exactly what the validation after it logged (raw uint8 batches failed)."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import CSVLogger
    from test_data_folder import TINY, make_folder

    from zoo.data import ImageFolderDataModule
    from zoo.training.module import ImageClassifier

    torch.manual_seed(0)
    root = make_folder(tmp_path / "imgs", {"red": 8, "green": 8, "blue": 8}, size=16)
    dm = ImageFolderDataModule(
        str(root),
        image_size=16,
        crop_pct=1.0,
        val_fraction=0.25,
        test_fraction=0.0,
        batch_size=6,
        num_workers=0,
    )
    snapshots = SnapshotEnsemble(2)
    trainer = Trainer(
        max_epochs=2,
        callbacks=[snapshots],
        logger=CSVLogger(tmp_path, name="run"),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ImageClassifier("convnet", num_classes=3, model_kwargs=TINY), dm)
    assert list(snapshots.results) == ["snapshot 1", "snapshot 2", "ensemble of 2"]
    val = _val_by_epoch(Path(trainer.logger.log_dir))
    scores = [snapshots.results[f"snapshot {m}"]["top1"] for m in (1, 2)]
    assert scores == pytest.approx([val[0], val[1]], abs=1e-6)


def test_score_snapshots_scores_each_checkpoint_and_puts_the_weights_back(tmp_path):
    from zoo.tools.ensemble import score_snapshots, snapshot_metrics

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    paths, probs = [], []
    for m in range(3):
        weights = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
        torch.save({"state_dict": weights}, tmp_path / f"s{m}.ckpt")
        paths.append(tmp_path / f"s{m}.ckpt")
        probs.append((x @ weights["weight"].T + weights["bias"]).softmax(-1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = score_snapshots(model, paths, lambda: [(x[:16], y[:16]), (x[16:], y[16:])], last=2)
    assert list(results) == ["snapshot 1", "snapshot 2", "snapshot 3", "ensemble of 3", "ensemble of last 2"]
    for m, p in enumerate(probs, 1):
        assert results[f"snapshot {m}"]["top1"] == pytest.approx((p.argmax(-1) == y).float().mean().item())
    mean = torch.stack(probs).mean(0)
    assert results["ensemble of 3"]["nll"] == pytest.approx(
        -mean[torch.arange(30), y].log().mean().item(), rel=1e-5
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert set(snapshot_metrics(results)) == {
        f"snapshot/val_top1/{k}" for k in ("1", "2", "3", "ensemble", "ensemble_last2")
    }
