"""Where a benchmark ran and how its results are kept: benchmarks/results/NAME.json (settings, figures, every
repeat) and NAME.md (a table: figure | zoo | baseline from the same run | ratio)."""

from __future__ import annotations

import json
import os
import platform
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
HEADER = "| figure | zoo | baseline, same run | ratio |\n|---|---:|---:|---:|\n"


def machine() -> dict:
    """Date, processor, cores, load average (1 min, taken before the benchmark loads the machine itself),
    device and library versions."""
    import lightning
    import timm
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {
        "date": date.today().isoformat(),
        "cpu": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "load_average": round(os.getloadavg()[0], 1),
        "device": gpu,
        "versions": f"Python {platform.python_version()}, torch {torch.__version__}, lightning "
        f"{lightning.__version__}, timm {timm.__version__}",
    }


def describe(where: dict) -> str:
    """One line: the date, the machine and its load, the versions."""
    return (
        f"{where['date']}, {where['cpu']} (load average {where['load_average']} from other processes at the "
        f"start), {where['device']}, {where['versions']}"
    )


def write(name: str, title: str, where: dict, settings: dict, result: dict, rows: list[str], notes: str = "",
          out: Path = RESULTS) -> None:  # fmt: skip
    """Write ``out/NAME.json`` and ``out/NAME.md``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {**where, "settings": settings, **result}
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    text = f"# {title}\n\n{describe(where)}.\n\n{HEADER}" + "\n".join(rows) + "\n"
    (out / f"{name}.md").write_text(text + (f"\n{notes.strip()}\n" if notes else ""))
