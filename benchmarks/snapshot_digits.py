"""Snapshot ensemble vs its best single snapshot vs a plain cosine run, on the digits, same budget (30 epochs).

    .venv/bin/python benchmarks/snapshot_digits.py [--seeds 0 1 2] [--lr 0.1] [--cycles 5] [--epochs 30]

For each seed, through the real CLI in fresh processes:
  1. `zoo fit --recipe digits` (1-epoch warmup, one cosine decay to 0) and its final weights (last.ckpt);
  2. `zoo fit --recipe digits_snapshot` (the same, but M cosine cycles with restarts and a snapshot each);
  3. `zoo ensemble` scores the plain run's final model, each snapshot, and the mean of the M snapshots'
     softmax outputs on the validation and test splits.
The best single snapshot is the one with the best validation top-1 (the test split is not used to choose).
Writes benchmarks/results/snapshot_digits.json and snapshot_digits.md.
"""

from __future__ import annotations

import argparse
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
ZOO = str(Path(sys.executable).with_name("zoo"))
LAST = 3  # also score the ensemble of the last 3 snapshots (the early ones are the weakest)
QUIET = ["--trainer.enable_progress_bar", "false", "--test_after_fit", "false"]


def fit(recipe: str, seed: int, where: str, options: list[str]) -> float:
    start = time.perf_counter()
    args = [ZOO, "fit", "--recipe", recipe, "--seed_everything", str(seed), *options, *QUIET]
    subprocess.run(args, cwd=where, check=True, capture_output=True)
    return time.perf_counter() - start


def scores(ckpts: list[Path], where: str, last: int | None = None) -> dict:
    out = Path(where) / "scores.json"
    args = [ZOO, "ensemble", "--recipe", "digits", "--ckpt", *map(str, ckpts), "--json", str(out)]
    args += ["--last", str(last)] if last else []
    subprocess.run(args, cwd=where, check=True, capture_output=True)
    return json.loads(out.read_text())


def run(seed: int, lr: float, cycles: int, epochs: int) -> dict:
    options = ["--model.optimizer.lr", str(lr), "--trainer.max_epochs", str(epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        plain_s = fit("digits", seed, tmp, options)
        snap_s = fit("digits_snapshot", seed, tmp, [*options, "--trainer.callbacks.cycles", str(cycles)])
        plain = scores([Path(tmp) / "runs/digits/version_0/checkpoints/last.ckpt"], tmp)
        snaps = sorted((Path(tmp) / "runs/digits_snapshot/version_0/snapshots").glob("*.ckpt"))
        assert len(snaps) == cycles, snaps
        snap = scores(snaps, tmp, last=LAST if cycles > LAST else None)
    members = [snap[str(p)] for p in snaps]
    best = max(range(cycles), key=lambda i: (members[i]["val"]["top1"], -members[i]["val"]["nll"]))
    ensemble = snap[f"ensemble of {cycles}"]
    plain = next(v for k, v in plain.items() if not k.startswith("ensemble"))
    return {
        "seed": seed,
        "plain_cosine": plain,
        "snapshots": members,
        "best_snapshot": best + 1,
        "ensemble": ensemble,
        f"ensemble_last{LAST}": snap.get(f"ensemble of last {LAST}"),
        "wall_s": {"plain": round(plain_s, 1), "snapshot": round(snap_s, 1)},
    }


def table(runs: list[dict], cycles: int) -> list[str]:
    lines = [
        f"| seed | plain cosine | best snapshot (by val) | last snapshot | ensemble of {cycles} | "
        f"ensemble of last {LAST} | test NLL: plain / best / ensemble |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        best, last = r["snapshots"][r["best_snapshot"] - 1], r["snapshots"][-1]
        tail = r.get(f"ensemble_last{LAST}")
        lines.append(
            f"| {r['seed']} | {r['plain_cosine']['test']['top1']:.4f} | {best['test']['top1']:.4f} "
            f"(#{r['best_snapshot']}) | {last['test']['top1']:.4f} | **{r['ensemble']['test']['top1']:.4f}** | "
            f"{tail['test']['top1'] if tail else float('nan'):.4f} | {r['plain_cosine']['test']['nll']:.4f} / "
            f"{best['test']['nll']:.4f} / {r['ensemble']['test']['nll']:.4f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lr", type=float, default=0.1, help="α0 of both runs")
    parser.add_argument("--cycles", type=int, default=5, help="M")
    parser.add_argument("--epochs", type=int, default=30, help="the budget of both runs")
    parser.add_argument("--name", default="snapshot_digits", help="file name of the results")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        runs.append(run(seed, args.lr, args.cycles, args.epochs))
        r = runs[-1]
        print(
            f"seed {seed}: plain {r['plain_cosine']['test']['top1']:.4f}, "
            f"best snapshot {r['snapshots'][r['best_snapshot'] - 1]['test']['top1']:.4f}, "
            f"ensemble {r['ensemble']['test']['top1']:.4f}"
        )

    def mean(get) -> float:
        return statistics.mean(get(r) for r in runs)

    summary = {
        "what": f"digits, {args.epochs} epochs, SGD momentum 0.9, α0 = {args.lr}, M = {args.cycles}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, no GPU",
        "runs": runs,
        "mean_test_top1": {
            "plain_cosine": mean(lambda r: r["plain_cosine"]["test"]["top1"]),
            "best_snapshot": mean(lambda r: r["snapshots"][r["best_snapshot"] - 1]["test"]["top1"]),
            "ensemble": mean(lambda r: r["ensemble"]["test"]["top1"]),
            "ensemble_last": mean(lambda r: (r[f"ensemble_last{LAST}"] or r["ensemble"])["test"]["top1"]),
        },
        "mean_test_nll": {
            "plain_cosine": mean(lambda r: r["plain_cosine"]["test"]["nll"]),
            "best_snapshot": mean(lambda r: r["snapshots"][r["best_snapshot"] - 1]["test"]["nll"]),
            "ensemble": mean(lambda r: r["ensemble"]["test"]["nll"]),
        },
        "ensemble_at_least_as_accurate_every_seed": all(
            r["ensemble"]["test"]["top1"]
            >= max(r["plain_cosine"]["test"]["top1"], r["snapshots"][r["best_snapshot"] - 1]["test"]["top1"])
            for r in runs
        ),
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    m = summary["mean_test_top1"]
    lines = [
        f"# Snapshot ensemble on the digits ({summary['what']})",
        "",
        f"{summary['machine']}. Test top-1 on the 360 test images (one image = 0.0028); "
        "`benchmarks/snapshot_digits.py`.",
        "",
        *table(runs, args.cycles),
        f"| mean | {m['plain_cosine']:.4f} | {m['best_snapshot']:.4f} | | **{m['ensemble']:.4f}** | "
        f"{m['ensemble_last']:.4f} | "
        f"{summary['mean_test_nll']['plain_cosine']:.4f} / {summary['mean_test_nll']['best_snapshot']:.4f} / "
        f"{summary['mean_test_nll']['ensemble']:.4f} |",
        "",
        "Ensemble at least as accurate as both the plain cosine run and the best snapshot on every seed: "
        f"**{'yes' if summary['ensemble_at_least_as_accurate_every_seed'] else 'no'}**.",
        "",
    ]
    (out / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
