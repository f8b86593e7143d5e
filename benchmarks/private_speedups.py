"""What the speed-ups that rely on a library's private behaviour buy on a whole run: ``zoo fit --recipe digits``
(30 epochs, the progress bar on, the final test), wall time of a fresh process, with each one switched off.

    .venv/bin/python benchmarks/private_speedups.py [--repeats 4] [--epochs 30] [--before COMMIT]

Variants, run interleaved (the machine's speed drifts), medians compared with the zoo's defaults:

- ``no skip_empty_hooks``: ``--run.skip_empty_hooks false`` (Lightning calls every empty per-batch hook);
- ``Lightning's profiler``: ``--trainer.profiler null`` (``PassThroughProfiler`` instead of ``NoProfiler``);
- ``before``: the code of ``COMMIT`` (``git archive``), which also had the speed-ups that read or override
  ``ModelCheckpoint``'s private members (a cached ``state_key``, an early return from ``on_train_batch_end``,
  the monitor candidates cloned, ``last.ckpt`` hard-linked to a new best) and the progress bar's stop that did
  not join rich's refresh thread.

Writes benchmarks/results/private_speedups.json and .md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import record

HERE = Path(__file__).parent
ROOT = HERE.parent
VARIANTS = {
    "zoo": [],
    "no skip_empty_hooks": ["--run.skip_empty_hooks", "false"],
    "Lightning's profiler": ["--trainer.profiler", "null"],
    "before": [],
}


def fit(args: list[str], tree: Path, cwd: Path) -> float:
    """Wall time in seconds of ``zoo fit --recipe digits ARGS`` run from ``tree``'s code in ``cwd``."""
    cwd.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).with_name("zoo")), "fit", "--recipe", "digits", *args]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)}
    )
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30, help="the recipe's 30, or fewer on a busy machine")
    parser.add_argument("--before", default="HEAD~1", help="the commit whose code the 'before' variant runs")
    args = parser.parse_args()
    where = record.machine()
    walls: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        for repeat in range(args.repeats):
            for name, extra in VARIANTS.items():
                tree = before if name == "before" else ROOT
                extra = [*extra, "--trainer.max_epochs", str(args.epochs)]
                walls[name].append(fit(extra, tree, Path(tmp) / f"{repeat}-{len(walls[name])}-{name[:6]}"))
                print(f"{name}: {walls[name][-1]:.2f} s", flush=True)
    zoo = statistics.median(walls["zoo"])
    rows = []
    for name, times in walls.items():
        median = statistics.median(times)
        rows.append(f"| {name} | {median:.2f} s | {zoo:.2f} s | {median / zoo:.3f} |")
    text = f"`zoo fit --recipe digits --trainer.max_epochs {args.epochs}`, wall time, median of {args.repeats}: {record.describe(where)}\n\n"
    text += record.HEADER.replace(
        "zoo | baseline, same run", "variant | zoo's defaults, same run"
    ) + "\n".join(rows)
    (record.RESULTS / "private_speedups.md").write_text(text + "\n")
    (record.RESULTS / "private_speedups.json").write_text(
        __import__("json").dumps(
            {"where": where, "walls_s": walls, "before": args.before, "epochs": args.epochs}, indent=1
        )
    )
    print(text)


if __name__ == "__main__":
    main()
