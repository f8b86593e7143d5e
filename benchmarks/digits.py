"""Digits recipe benchmark: test top-1 and wall time of `zoo fit --recipe digits` with its defaults.

    .venv/bin/python benchmarks/digits.py [--seeds 0 1 2]

Runs the real CLI in a fresh process per seed (wall time includes start-up) and writes
benchmarks/results/digits.json and digits.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent


def run(seed: int) -> dict:
    zoo = Path(sys.executable).with_name("zoo")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [
                str(zoo),
                "fit",
                "--recipe",
                "digits",
                "--seed_everything",
                str(seed),
                "--trainer.enable_progress_bar",
                "false",
            ],
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - start
        with open(Path(tmp) / "runs/digits/version_0/metrics.csv") as f:
            rows = list(csv.DictReader(f))
    test = float([r["test/top1"] for r in rows if r.get("test/top1")][-1])
    val = max(float(r["val/top1"]) for r in rows if r.get("val/top1"))
    return {"seed": seed, "test_top1": test, "best_val_top1": val, "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    runs = [run(s) for s in args.seeds]
    for r in runs:
        print(r)
    summary = {
        "recipe": "digits",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, no GPU",
        "runs": runs,
        "mean_test_top1": statistics.mean(r["test_top1"] for r in runs),
        "min_test_top1": min(r["test_top1"] for r in runs),
        "mean_wall_s": statistics.mean(r["wall_s"] for r in runs),
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "digits.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# digits recipe",
        "",
        f"`zoo fit --recipe digits` with its defaults; {summary['machine']}.",
        "Wall time is the whole command in a fresh process (start-up, 30 epochs, test of the best checkpoint).",
        "",
        "| seed | test top-1 | best val top-1 | wall time (s) |",
        "|---:|---:|---:|---:|",
        *[f"| {r['seed']} | {r['test_top1']:.4f} | {r['best_val_top1']:.4f} | {r['wall_s']} |" for r in runs],
        f"| mean | {summary['mean_test_top1']:.4f} | | {summary['mean_wall_s']:.1f} |",
        "",
    ]
    (out / "digits.md").write_text("\n".join(lines))
    print(f"mean test top-1 {summary['mean_test_top1']:.4f}, mean wall {summary['mean_wall_s']:.1f} s")


if __name__ == "__main__":
    main()
