"""Run ``zoo fit`` as a user would (a fresh process, the recipe's defaults) and read what it reports.

Shared by the accuracy benchmarks: wall time from process start to the end of the final test, the test top-1
from the run's ``metrics.csv``, and the lines the run printed about its choices.
"""

from __future__ import annotations

import csv
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


def zoo_fit(args: list[str], cwd: Path, said: tuple[str, ...] = ()) -> dict:
    """``zoo fit ARGS`` in ``cwd``: {"wall_s", "test_top1", "said": {prefix: line}} (an error stops the script)."""
    command = [
        str(Path(sys.executable).with_name("zoo")),
        "fit",
        *args,
        "--trainer.enable_progress_bar",
        "false",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    lines = (done.stdout + done.stderr).splitlines()
    (log,) = sorted(cwd.glob("runs/*/version_*/metrics.csv"))
    rows = list(csv.DictReader(log.open()))
    test = float([r["test/top1"] for r in rows if r.get("test/top1")][-1])
    found = {p: next((line for line in lines if line.startswith(p)), "") for p in said}
    return {"wall_s": round(wall, 1), "test_top1": test, "said": found}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, no GPU"
