"""``make bench``: the CPU benchmarks, one table (figure | zoo | baseline from the same run | ratio).

    .venv/bin/python benchmarks/bench.py [--repeats 3] [--only framework_tax switches ...]
    .venv/bin/python benchmarks/bench.py --table-only     (the table of the latest results, nothing run)

Each benchmark runs in its own process (one's thread settings and imports do not reach the next), writes its
benchmarks/results/NAME.json and NAME.md, and its rows are read back from the JSON; the whole table goes to
benchmarks/results/bench.md. Every ratio is measured side by side within one benchmark's run (medians of
interleaved repeats): the figures of two rows may come from different minutes of a busy machine, their ratios
do not. benchmarks/gpu.py needs a GPU and is not run here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import record

HERE = Path(__file__).parent
# name: (what it measures, its arguments at --repeats N)
BENCHES = {
    "framework_tax": (
        "`zoo fit` vs a plain loop",
        lambda n: ["--repeats", str(n), "--overhead-repeats", str(n), "--throughput-repeats", str(n)],
    ),
    "switches": ("speed switches", lambda n: ["--repeats", str(n), "--steps", "3"]),
    "pipeline": ("input pipeline vs torchvision", lambda n: ["--repeats", str(n)]),
    "streaming": ("streaming vs image folder", lambda n: ["--repeats", str(n)]),
}


def rows_of(name: str, result: dict) -> list[str]:
    """The table rows of a benchmark's saved JSON, by the benchmark's own ``rows``."""
    sys.path.insert(0, str(HERE))
    module = __import__(name)
    if name == "switches":  # JSON keys are strings; the loader rows are keyed by the number of workers
        result = {**result, "workers": {int(k): v for k, v in (result.get("workers") or {}).items()}}
    out = module.rows(result)
    if name == "framework_tax" and result.get("tiny"):
        out += module.overhead_rows(result["tiny"])
    if name == "framework_tax" and result.get("throughput"):
        out += module.throughput_rows(result["throughput"])
    return out


def table(names: list[str], results: Path = record.RESULTS) -> tuple[list[str], list[str]]:
    """(rows, sources): every benchmark's rows from its latest JSON, and where and when each ran."""
    rows, sources = [], []
    for name in names:
        path = results / f"{name}.json"
        if not path.exists():
            sources.append(f"{name}: not run yet")
            continue
        result = json.loads(path.read_text())
        rows += rows_of(name, result)
        mine = "load_average" in result  # written by record.write: the line has the date
        where = record.describe(result) if mine else f"{result.get('date', '')}, {result.get('machine', '')}"
        sources.append(f"{name} ({BENCHES[name][0]}): {where}")
    return rows, sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each benchmark")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--table-only", action="store_true", help="print the latest results, run nothing")
    args = parser.parse_args(argv)
    if not args.table_only:
        for name in args.only:
            start = time.perf_counter()
            print(f"running {name} ({BENCHES[name][0]}) ...", flush=True)
            command = [sys.executable, str(HERE / f"{name}.py"), *BENCHES[name][1](args.repeats)]
            done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True)
            if done.returncode:
                print(f"{name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
                return done.returncode
            print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    rows, sources = table(list(BENCHES) if args.table_only else args.only)
    text = record.HEADER + "\n".join(rows) + "\n"
    print("\n" + text)
    print("\n".join(sources))
    (record.RESULTS / "bench.md").write_text(
        "# CPU benchmarks (`make bench`)\n\n" + text + "\n" + "\n".join(f"- {s}" for s in sources) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
