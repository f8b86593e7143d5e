"""The loss-curve reading: the underfitting rule on histories, and the reading in an offline W&B run."""

from __future__ import annotations

import json
import math

import pytest
from conftest import FAST_TRAINER
from test_wandb import offline_runs, run_cli, wandb_records

from zoo.training.diagnose import History, diagnose


def kinds(h: History) -> set[str]:
    return {f.kind for f in diagnose(h)}


def plateau(end: float, epochs: int = 20) -> list[float]:
    """A loss falling from 2.3 to a plateau at ``end``."""
    return [end + (2.3 - end) * math.exp(-0.8 * e) for e in range(epochs)]


def test_poor_train_and_val_close_together_mean_underfitting():
    train = plateau(1.1)
    h = History(
        train_loss=train,
        val_loss=[v + 0.05 for v in train],
        initial_loss=2.3,
        train_acc=[0.62] * 20,
        val_acc=[0.60] * 20,
    )
    found = {f.kind: f.message for f in diagnose(h)}
    assert set(found) == {"underfitting"}
    assert "bigger model" in found["underfitting"] and "less regularisation" in found["underfitting"]


def test_low_losses_are_not_underfitting():
    train = plateau(0.1)
    h = History(train_loss=train, val_loss=[v + 0.02 for v in train], initial_loss=2.3)
    assert "underfitting" not in kinds(h)


def test_poor_train_but_far_worse_val_is_not_underfitting():
    train = plateau(1.1)
    h = History(train_loss=train, val_loss=[v + 0.6 for v in train], initial_loss=2.3)
    assert "underfitting" not in kinds(h)


@pytest.mark.slow
def test_the_reading_goes_to_the_wandb_run(tmp_path):
    args = ["fit", "--recipe", "digits", "--logger", "wandb", "--trainer.max_epochs", "2"]
    args += ["--trainer.limit_train_batches", "4", "--test_after_fit", "false", *FAST_TRAINER]
    run_cli(args, tmp_path)
    (run_dir,) = offline_runs(tmp_path)
    summary, history = {}, set()
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            for item in record.summary.update:
                summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "history":
            history |= {i.nested_key[0] if i.nested_key else i.key for i in record.history.item}
    (local,) = tmp_path.rglob("diagnosis.json")
    findings = json.loads(local.read_text())["findings"]
    assert summary["diagnosis/findings"] == ", ".join(f["kind"] for f in findings)
    for finding in findings:
        assert summary[f"diagnosis/{finding['kind']}"] == finding["message"]
    assert {"diagnosis/table", "diagnosis/loss_curves"} <= history, sorted(history)
    (table,) = (run_dir / "files" / "media" / "table" / "diagnosis").glob("table_*.table.json")
    cells = json.loads(table.read_text())
    assert cells["columns"] == ["kind", "message"]
    assert cells["data"] == [[f["kind"], f["message"]] for f in findings]
