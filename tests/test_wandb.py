"""Weights & Biases tracking: the CLI shorthand, the offline fallback, the run's records, resume and DDP.

Offline runs are read back from their ``run-<id>.wandb`` transaction log (LevelDB log blocks holding
``wandb_internal_pb2.Record`` protobufs; wandb ships the protobufs but no Python reader for the file).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER

from recipes.cli import expand_logger

ZOO = str(Path(sys.executable).with_name("zoo"))
QUICK = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", *FAST_TRAINER)


def wandb_records(run_dir: Path) -> list:
    """Every record of an offline run, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    found = sorted(run_dir.glob("run-*.wandb"))
    assert len(found) == 1, f"{run_dir} holds {sorted(p.name for p in run_dir.iterdir())}"
    path = found[0]
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, pos, buf, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding up to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            records.append(pb.Record.FromString(buf))
    return records


def read_run(run_dir: Path) -> dict:
    """The run's metadata, config (nested dicts), and the names and rows of its history."""
    run, config, history = None, {}, []
    for r in wandb_records(run_dir):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            updates = r.run.config.update
        elif kind == "config":
            updates = r.config.update
        elif kind == "history":
            history.append(
                {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            )
            continue
        else:
            continue
        for u in updates:
            keys = list(u.nested_key) or [u.key]
            node = config
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = json.loads(u.value_json)
    names = {k.split("/_")[0] for row in history for k in row}
    return {"run": run, "config": config, "history": history, "names": names}


def offline_runs(root: Path) -> list[Path]:
    return sorted(root.rglob("offline-run-*"))


def run_cli(args, cwd: Path, mode: str = "offline", timeout: int = 300) -> subprocess.CompletedProcess:
    """The real ``zoo`` in its own process, with its own W&B service (WANDB_SERVICE would attach it to
    one this test process may have started)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE=mode, WANDB_SILENT="true")
    done = subprocess.run([ZOO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


# --- the command line -------------------------------------------------------------------------------


def test_logger_shorthand_expands_in_place():
    argv = [
        "--config",
        "r.yaml",
        "--logger",
        "wandb",
        "--wandb.project",
        "P",
        "--wandb.tags=[a,b]",
        "--x",
        "1",
    ]
    assert expand_logger(argv) == [
        "--config",
        "r.yaml",
        "--trainer.logger",
        "zoo.runtime.loggers.WandbLogger",
        "--trainer.logger.init_args.project",
        "P",
        "--trainer.logger.init_args.tags",
        "[a,b]",
        "--x",
        "1",
    ]
    # a --wandb.* option alone turns W&B on; --logger none turns logging off
    assert expand_logger(["--wandb.group", "g"])[:2] == [
        "--trainer.logger",
        "zoo.runtime.loggers.WandbLogger",
    ]
    assert expand_logger(["--logger", "none"]) == ["--trainer.logger", "false"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--logger", "mlflw"], "unknown --logger 'mlflw'"),
        (["--logger", "csv", "--wandb.project", "P"], "--wandb.project needs --logger wandb"),
        (["--wandb.project"], "--wandb.project needs a value"),
    ],
)
def test_logger_shorthand_errors_name_the_option(argv, message):
    with pytest.raises(SystemExit, match=message.replace("*", r"\*").replace(".", r"\.")):
        expand_logger(argv)


def test_unknown_wandb_key_is_an_error_naming_it(zoo_cli, capsys):
    with pytest.raises(SystemExit):
        zoo_cli("fit", "--recipe", "digits", "--wandb.projct", "P", *QUICK)
    assert "projct" in capsys.readouterr().err


def test_without_wandb_logger_nothing_imports_or_writes_wandb(tmp_path):
    code = (
        "import sys; import recipes.cli; assert 'wandb' not in sys.modules, 'imported at start';"
        "from recipes.cli import main; main(['fit', '--recipe', 'digits', *sys.argv[1:]]);"
        "assert 'wandb' not in sys.modules, 'imported by a CSV run'"
    )
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(
        [sys.executable, "-c", code, *QUICK], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "digits" / "version_0" / "metrics.csv").is_file()
    assert not [p for p in tmp_path.rglob("*") if "wandb" in p.name]


# --- choosing the mode ------------------------------------------------------------------------------


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """No API key anywhere wandb looks: env, ~/.netrc, its settings file."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    (tmp_path / "netrc").write_text("")
    return monkeypatch


def test_mode_follows_wandb_mode_env(monkeypatch):
    from zoo.runtime.loggers import wandb_mode

    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == ("disabled", "WANDB_MODE=disabled")
    assert wandb_mode(offline=True)[0] == "disabled"  # disabled wins: nothing is written
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == ("offline", "WANDB_MODE=offline")


def test_no_api_key_goes_offline_and_says_why(no_credentials):
    from zoo.runtime.loggers import WandbLogger, wandb_mode

    mode, reason = wandb_mode()
    assert mode == "offline" and "no W&B API key" in reason and "wandb login" in reason
    with pytest.warns(UserWarning, match="logging offline because no W&B API key"):
        logger = WandbLogger(project="p", log_model=True)
    assert logger.mode == "offline" and logger._log_model is False  # no artifacts offline


def test_unreachable_server_goes_offline(no_credentials):
    from zoo.runtime.loggers import wandb_mode

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    no_credentials.setenv("WANDB_API_KEY", "k" * 40)
    no_credentials.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert wandb_mode() == ("offline", f"cannot reach http://127.0.0.1:{port}")


def test_key_and_reachable_server_is_online(no_credentials):
    from zoo.runtime.loggers import WandbLogger, wandb_mode

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        no_credentials.setenv("WANDB_API_KEY", "k" * 40)
        no_credentials.setenv("WANDB_BASE_URL", url)
        assert wandb_mode()[0] == "online"
        logger = WandbLogger(project="p", group="g", tags=["a"], log_model="all")
    assert logger.mode == "online" and logger._log_model == "all"
    init = logger._wandb_init
    assert (init["mode"], init["group"], init["tags"], init["project"]) == ("online", "g", ["a"], "p")


# --- real runs --------------------------------------------------------------------------------------


def test_offline_digits_run_records_metrics_config_and_report(tmp_path):
    done = run_cli(
        [
            "fit",
            "--recipe",
            "digits",
            "--logger",
            "wandb",
            "--wandb.project",
            "zoo-test",
            "--wandb.name",
            "digits-offline",
            "--wandb.group",
            "g1",
            "--wandb.tags",
            "[a,b]",
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "4",
            *FAST_TRAINER,
        ],
        tmp_path,
    )
    (run_dir,) = offline_runs(tmp_path)
    got = read_run(run_dir)
    run = got["run"]
    assert (run.project, run.display_name, run.run_group, list(run.tags)) == (
        "zoo-test",
        "digits-offline",
        "g1",
        ["a", "b"],
    )
    # the config is the fully resolved recipe, overrides included
    config = got["config"]
    assert config["trainer"]["max_epochs"] == 2
    assert config["model"]["arch"] == "convnet"
    assert config["data"]["init_args"]["batch_size"] == 64
    assert config["trainer"]["logger"]["init_args"]["group"] == "g1"
    names = got["names"]
    for key in (
        "train/loss",
        "train/top1",
        "train/top5",
        "val/loss",
        "val/top1",
        "val/top5",
        "test/top1",
        "train/epoch_time",
        "train/images_per_sec",
        "val/per_class_accuracy",
        "val/misclassified",
        "val/confusion_matrix_table",
        "train/lr_schedule",
    ):
        assert key in names, f"{key} missing from {sorted(names)}"
    # lr and momentum of every param group (Lightning's LearningRateMonitor, on by default)
    assert any(k.startswith("lr-") and not k.endswith("-momentum") for k in names), sorted(names)
    assert any(k.startswith("lr-") and k.endswith("-momentum") for k in names), sorted(names)
    # the confusion matrix logged to W&B is the one written next to the checkpoints
    (table,) = (run_dir / "files" / "media" / "table" / "val").glob("confusion_matrix_table_*.table.json")
    cells = json.loads(table.read_text())
    assert cells["columns"] == ["Actual", "Predicted", "nPredictions"]
    local = tmp_path / "runs" / "zoo-test" / run.run_id
    rows = (local / "confusion_matrix.csv").read_text().splitlines()[1:]
    counts = [[int(v) for v in row.split(",")[1:]] for row in rows]
    assert [int(n) for _, _, n in cells["data"]] == [n for row in counts for n in row]
    assert sum(n for row in counts for n in row) == 360  # every validation image
    assert (local / "config.yaml").is_file() and list((local / "checkpoints").glob("last.ckpt"))
    # the run says how to upload it
    rel = run_dir.relative_to(tmp_path)
    assert f"wandb sync {rel}" in done.stdout + done.stderr


def test_wandb_mode_disabled_writes_nothing(zoo_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert zoo_cli("fit", "--recipe", "digits", "--logger", "wandb", *QUICK) == 0
    assert not list(tmp_path.rglob("wandb"))
    assert not list(tmp_path.rglob("*.wandb"))


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_same_run(tmp_path):
    from callbacks.wandb_run import wandb_run_id

    run_cli(["fit", "--recipe", "digits", "--logger", "wandb", *QUICK], tmp_path)
    (first,) = offline_runs(tmp_path)
    run_id = read_run(first)["run"].run_id
    (ckpt,) = (tmp_path / "runs" / "lightning-zoo" / run_id / "checkpoints").glob("last.ckpt")
    assert wandb_run_id(ckpt) == run_id
    assert torch.load(ckpt, weights_only=True)["callbacks"]["WandbRunId"]["id"] == run_id

    more = ("--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4", *FAST_TRAINER)
    done = run_cli(
        ["fit", "--recipe", "digits", "--logger", "wandb", "--ckpt_path", str(ckpt), *more], tmp_path
    )
    assert f"W&B: resuming run {run_id}" in done.stdout + done.stderr
    second = [p for p in offline_runs(tmp_path) if p != first]
    assert len(second) == 1 and second[0].name.endswith(run_id)
    resumed = read_run(second[0])
    assert resumed["run"].run_id == run_id
    steps = [row["trainer/global_step"] for row in resumed["history"] if "trainer/global_step" in row]
    assert min(steps) >= 4  # the second run logs epoch 2's steps, after the first run's 4


@pytest.mark.slow
def test_ddp_two_processes_make_one_run(tmp_path):
    run_cli(
        [
            "fit",
            "--recipe",
            "digits",
            "--logger",
            "wandb",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.log_every_n_steps",
            "1",
            *QUICK,
        ],
        tmp_path,
        timeout=240,
    )
    runs = offline_runs(tmp_path)
    assert len(runs) == 1, runs
    got = read_run(runs[0])
    assert str(got["config"]["trainer"]["devices"]) == "2"
    assert {"train/loss", "val/top1", "train/images_per_sec"} <= got["names"]
    assert len(list((tmp_path / "runs").rglob("confusion_matrix.csv"))) == 1
