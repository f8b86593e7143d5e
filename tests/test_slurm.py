"""The SLURM template: its task and GPU counts match the multi-GPU recipes, the command it runs resolves through the
real CLI to those trainer settings, and Lightning's SLURM environment accepts them (with auto-requeue on SIGUSR1)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Trainer

from recipes.catalog import recipe_names, recipe_path

TEMPLATE = Path(str(files("recipes") / "slurm.sbatch"))
MULTI_GPU = [
    n
    for n in recipe_names()
    if (yaml.safe_load(recipe_path(n).read_text())["trainer"]).get("strategy") == "ddp"
]


def directives() -> dict[str, str]:
    """``#SBATCH --key=value`` lines as {key: value}."""
    found = re.findall(r"^#SBATCH\s+--([\w-]+)(?:=(\S+))?", TEMPLATE.read_text(), flags=re.M)
    return {key: value for key, value in found}


def default_recipe() -> str:
    return re.search(r'^RECIPE="\$\{RECIPE:-([\w-]+)\}"', TEMPLATE.read_text(), flags=re.M).group(1)


def srun_command(tmp_path: Path, nodes: int, tasks_per_node: int, **env: str) -> list[str]:
    """Run the template with bash and a stand-in ``srun`` that writes down the command it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    (bin_dir / "srun").chmod(0o755)
    out = tmp_path / "srun_args.txt"
    slurm = {
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NTASKS_PER_NODE": str(tasks_per_node),
        "SLURM_CPUS_PER_TASK": "10",
    }
    full_env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SRUN_ARGS": str(out),
        **slurm,
        **env,
    }
    subprocess.run(["bash", str(TEMPLATE)], env=full_env, check=True, cwd=tmp_path)
    return out.read_text().splitlines()


def resolved_config(zoo_cli, capsys, command: list[str]) -> dict:
    assert command[:2] == ["zoo", "fit"]
    with pytest.raises(SystemExit):
        zoo_cli(*command[1:], "--print_config")
    return yaml.safe_load(capsys.readouterr().out)


def test_template_ships_with_the_package_and_asks_for_one_task_per_gpu():
    assert TEMPLATE.is_file()
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    section = re.search(
        r"^\[tool\.setuptools\.package-data\]\s*^recipes\s*=\s*\[(.*?)\]", pyproject, re.M | re.S
    )
    shipped = re.findall(r'"([^"]+)"', section.group(1))
    assert any(fnmatch(TEMPLATE.name, pattern) for pattern in shipped), shipped
    d = directives()
    gpus = int(d["gres"].rsplit(":", 1)[-1])
    assert int(d["ntasks-per-node"]) == gpus
    assert default_recipe() in MULTI_GPU


@pytest.mark.parametrize("name", MULTI_GPU)
def test_counts_match_the_recipes_trainer_settings(name):
    trainer = yaml.safe_load(recipe_path(name).read_text())["trainer"]
    d = directives()
    assert int(d["ntasks-per-node"]) == trainer["devices"], "ntasks-per-node ≠ the recipe's trainer.devices"
    assert int(d["gres"].rsplit(":", 1)[-1]) == trainer["devices"], "GPUs per node ≠ trainer.devices"
    assert int(d["nodes"]) == trainer.get("num_nodes", 1)
    assert trainer.get("sync_batchnorm") is True


@pytest.mark.parametrize("nodes", [1, 4])
def test_srun_command_resolves_to_settings_lightnings_slurm_environment_accepts(
    nodes, tmp_path, zoo_cli, capsys, monkeypatch
):
    d = directives()
    tasks = int(d["ntasks-per-node"])
    command = srun_command(tmp_path, nodes, tasks, DATA="/data/imagenet")
    config = resolved_config(zoo_cli, capsys, command)
    trainer = config["trainer"]
    assert (int(trainer["devices"]), int(trainer["num_nodes"]), trainer["strategy"]) == (tasks, nodes, "ddp")
    assert trainer["accelerator"] == "gpu" and trainer["sync_batchnorm"] is True
    assert config["ckpt_path"] == "last" and config["data"]["init_args"]["root"] == "/data/imagenet"
    assert config["data"]["init_args"]["num_workers"] == 9  # 10 CPUs per task, one for the training loop
    assert default_recipe() in command

    # what srun sets in each task; Lightning then picks its SLURM environment and checks the counts
    for key, value in {
        "SLURM_NTASKS": nodes * tasks,
        "SLURM_NTASKS_PER_NODE": tasks,
        "SLURM_NNODES": nodes,
        "SLURM_JOB_NUM_NODES": nodes,
        "SLURM_PROCID": 0,
        "SLURM_LOCALID": 0,
        "SLURM_NODEID": 0,
        "SLURM_JOB_ID": 123,
        "SLURM_JOB_NAME": d["job-name"],
        "SLURM_NODELIST": "node[1-4]",
    }.items():
        monkeypatch.setenv(key, str(value))
    built = Trainer(  # the CPU stands in for the GPUs; the cluster settings are the resolved ones
        accelerator="cpu",
        devices=trainer["devices"],
        num_nodes=trainer["num_nodes"],
        strategy=trainer["strategy"],
        logger=False,
    )
    env = built.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment)
    env.validate_settings(
        num_devices=built.num_devices, num_nodes=built.num_nodes
    )  # as Lightning's launcher does
    assert built.world_size == nodes * tasks
    with pytest.raises(ValueError, match="ntasks-per-node"):
        env.validate_settings(num_devices=tasks // 2, num_nodes=nodes)  # the check that would stop a mismatch
    # pre-emption: SLURM's warning signal is the one Lightning saves and requeues on
    assert env.auto_requeue and env.requeue_signal == signal.SIGUSR1
    assert d["signal"].startswith("SIGUSR1@") and "requeue" in d


def test_extra_options_reach_the_command(tmp_path):
    command = srun_command(tmp_path, 1, 8, RECIPE="imagenet-resnet18", EXTRA="--trainer.max_epochs 1")
    assert command[command.index("--recipe") + 1] == "imagenet-resnet18"
    assert command[-2:] == ["--trainer.max_epochs", "1"]
