"""Run ``zoo fit`` as a user would (a fresh process, the recipe's defaults) and read what it reports.

Shared by the accuracy benchmarks: wall time from process start to the end of the final test, the test top-1
from the run's ``metrics.csv``, and the lines the run printed about its choices.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent


def run_zoo(
    command: str, args: list[str], cwd: Path, ok: bool = True, tree: Path | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    """``zoo COMMAND ARGS`` in ``cwd`` without a progress bar: the finished process and its wall time in seconds
    (with ``ok``, a failure stops the script with what the command printed). ``tree``: run the code of another
    checkout of the project (a ``git worktree`` of an earlier commit) instead of this one."""
    command_line = [str(Path(sys.executable).with_name("zoo")), command, *args]
    command_line += ["--trainer.enable_progress_bar", "false"]
    cwd.mkdir(parents=True, exist_ok=True)
    paths = [str(tree)] if tree else [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(HERE)])}
    start = time.perf_counter()
    done = subprocess.run(command_line, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if ok and done.returncode:
        raise SystemExit(f"{' '.join(command_line)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done, round(wall, 1)


def zoo_fit(
    args: list[str], cwd: Path, said: tuple[str, ...] = (), phases: bool = False, tree: Path | None = None
) -> dict:
    """``zoo fit ARGS`` in ``cwd``: {"wall_s", "test_top1", "said": {prefix: line}} (an error stops the script);
    ``phases``: and "phases", seconds by phase (:class:`phase_clock.PhaseClock`)."""
    clock = cwd / "phases.json"
    if phases:
        args = [*args, "--trainer.callbacks+=phase_clock.PhaseClock", f"--trainer.callbacks.path={clock}"]
    done, wall = run_zoo("fit", args, cwd, tree=tree)
    lines = (done.stdout + done.stderr).splitlines()
    (log,) = sorted(cwd.glob("runs/*/version_*/metrics.csv"))
    rows = list(csv.DictReader(log.open()))
    test = float([r["test/top1"] for r in rows if r.get("test/top1")][-1])
    found = {p: next((line for line in lines if line.startswith(p)), "") for p in said}
    result = {"wall_s": wall, "test_top1": test, "said": found}
    if phases and clock.is_file():
        result["phases"] = json.loads(clock.read_text())
    return result


def machine() -> str:
    load = os.getloadavg()[0]
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores (load average {load:.1f} from other processes), "
        f"torch {torch.__version__}, no GPU"
    )


def page(title: str, intro: str, columns: list[str], right: int = 0) -> list[str]:
    """The first lines of a results page: the title, a paragraph, and the head of a table of ``columns`` (the
    last ``right`` of them right-aligned: the figures)."""
    align = ["---"] * (len(columns) - right) + ["---:"] * right
    return [f"# {title}", "", intro, "", "| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]


def write_results(name: str, summary: dict, text: str) -> None:
    """benchmarks/results/NAME.json (``summary``) and NAME.md (``text``), and ``text`` on the terminal."""
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / f"{name}.md").write_text(text)
    print(text)
