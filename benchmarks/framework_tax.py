"""Framework tax: ``zoo fit --recipe digits`` against a plain PyTorch loop doing the same work.

    .venv/bin/python benchmarks/framework_tax.py [--repeats 5 --overhead-repeats 5 --epochs 30]
    .venv/bin/python benchmarks/framework_tax.py plain --out FILE.json [--epochs 30 --tiny]   (one plain run)

The plain loop does what the recipe does, written as a PyTorch user would: the same network from
``zoo.create_model``, scikit-learn's digits split 60/20/20 (stratified, seed 0), inputs standardised with the
training split's statistics, random shifts of up to one pixel (torchvision's ``RandomCrop(8, padding=1)``),
SGD momentum 0.9, lr 0.1, weight decay 5e-4 off biases and norms (timm's split), lr(t) = 0.1 · min(1, t) ·
½(1 + cos(πt/T)) set before every step (t in epochs, T the run's epochs), validation every epoch, the weights
of the best validation loss saved to a file, and a test of those weights.

Both sides run as a user runs them, in a fresh process each (start-up included) with their output to a
terminal (a pseudo-terminal here, so the zoo's progress bar draws as it would), alternately, ``repeats``
times. The zoo keeps every default output of the recipe (checkpoints, CSV log, end-of-fit report, loss-curve
reading, lr plot). Each run also notes when each epoch and its validation start and when the validation ends
(in the zoo, the benchmark's one added callback, ``epoch_clock.EpochClock``): an epoch's time is the span to
the next epoch's start, which holds all it costs (training, validation, checkpoints, logging, the bar). The
fixed cost is the wall time less the epochs, the last epoch counted at the run's median. The overhead per step
is the difference of the two sides' epochs over the steps of an epoch (training and validation).

The overhead rows run both sides again with a network of one 4-channel block (:data:`TINY`): its compute is
small, so the epoch is mostly the loop around it (data, hooks, logging, checkpoints), and the machine's
±10 % drift in compute speed no longer hides a fraction of a millisecond per step.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pty
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPE = {"batch": 64, "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0, "lr": 0.1, "momentum": 0.9}
RECIPE |= {"weight_decay": 5e-4, "warmup": 1.0, "shift": 1, "widths": [32, 64], "depth": 2, "drop_rate": 0.25}
# the overhead rows' network: one block of 4 channels, so that an epoch is mostly the loop around the network
TINY = {"widths": [4], "depth": 1}


# --- the plain loop ----------------------------------------------------------------------------------------------


class Shifted:
    """``(standardise(shift(x_i)), y_i)``: the plain loop's dataset (a per-image random shift, as the recipe)."""

    def __init__(self, x, y, mean, std, shift: int):
        from torchvision.transforms import v2

        self.x, self.y, self.mean, self.std = x, y, mean, std
        self.crop = v2.RandomCrop(x.shape[-1], padding=shift) if shift else None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        if self.crop is not None:
            x = self.crop(x)
        return (x - self.mean) / self.std, self.y[i]


def digits_splits(seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2):
    """The recipe's split of scikit-learn's digits: {"train"|"val"|"test": (x N×1×8×8 in [0, 1], y)}."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y.numpy(), random_state=seed)
    size = val_fraction / (1 - test_fraction)
    train, val = train_test_split(rest, test_size=size, stratify=y.numpy()[rest], random_state=seed)
    return {k: (x[np.sort(v)], y[np.sort(v)]) for k, v in (("train", train), ("val", val), ("test", test))}


def plain_fit(epochs: int, out: Path, seed: int = 0, log=print, tiny: bool = False) -> dict:
    """Train the digits recipe with a plain loop (``tiny``: the :data:`TINY` network); returns what it did
    (steps, images, network size) and its clock (when each epoch and its validation started, and when that ended)."""
    import torch
    import torch.nn.functional as F
    from timm.optim import param_groups_weight_decay
    from torch.utils.data import DataLoader

    import zoo

    r = RECIPE | (TINY if tiny else {})
    torch.manual_seed(seed)
    splits = digits_splits(r["seed"], r["val_fraction"], r["test_fraction"])
    train_x = splits["train"][0]
    mean, std = train_x.mean(dim=(0, 2, 3)).view(-1, 1, 1), train_x.std(dim=(0, 2, 3)).view(-1, 1, 1)
    data = {k: Shifted(x, y, mean, std, r["shift"] if k == "train" else 0) for k, (x, y) in splits.items()}
    loaders = {k: DataLoader(d, batch_size=r["batch"], shuffle=k == "train") for k, d in data.items()}
    model = zoo.create_model(
        "convnet", num_classes=10, in_chans=1, widths=r["widths"], depth=r["depth"], drop_rate=r["drop_rate"]
    )
    groups = param_groups_weight_decay(model, r["weight_decay"])
    opt = torch.optim.SGD(groups, lr=r["lr"], momentum=r["momentum"])
    steps_per_epoch = len(loaders["train"])

    def lr_at(step: int) -> float:
        t = step / steps_per_epoch
        return r["lr"] * min(1.0, t / r["warmup"]) * 0.5 * (1 + math.cos(math.pi * t / epochs))

    def evaluate(loader) -> tuple[float, float]:
        model.eval()
        loss, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for x, y in loader:
                logits = model(x)
                loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(-1) == y).sum().item()
                n += len(y)
        return loss / n, correct / n

    step, images, best, clock = 0, 0, float("inf"), []
    out.mkdir(parents=True, exist_ok=True)
    for epoch in range(epochs):
        clock.append([time.perf_counter()])
        model.train()
        for x, y in loaders["train"]:
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            images += len(y)
        clock[-1].append(time.perf_counter())
        val_loss, val_top1 = evaluate(loaders["val"])
        clock[-1].append(time.perf_counter())
        if val_loss < best:
            best = val_loss
            torch.save(model.state_dict(), out / "best.pt")
        log(f"epoch {epoch}: train loss {loss.item():.4f}, val loss {val_loss:.4f}, val top-1 {val_top1:.4f}")
    model.load_state_dict(torch.load(out / "best.pt", weights_only=True))
    test_loss, test_top1 = evaluate(loaders["test"])
    log(f"test top-1 {test_top1:.4f} (best val loss {best:.4f})")
    return {
        "steps": step,
        "train_images": images,
        "steps_per_epoch": steps_per_epoch,
        "val_batches": len(loaders["val"]),
        "split_sizes": {k: len(d) for k, d in data.items()},
        "network_size": sum(t.numel() for t in model.state_dict().values()),
        "clock": clock,
        "test_top1": test_top1,
    }


# --- running both sides as a user would --------------------------------------------------------------------------


def in_terminal(command: list[str], cwd: Path, env: dict | None = None) -> tuple[int, float, float, str]:
    """Run ``command`` with its output to a pseudo-terminal (80×24); (exit code, wall seconds, CPU seconds of the
    process and its children, output)."""
    leader, follower = pty.openpty()
    out: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            out.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {**os.environ, "COLUMNS": "80", "LINES": "24", "TERM": "xterm-256color", **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    os.close(follower)
    reader.join(timeout=10)
    os.close(leader)
    return done.returncode, wall, cpu, b"".join(out).decode(errors="replace")


def zoo_run(epochs: int, cwd: Path, env: dict | None = None, tiny: bool = False) -> dict:
    """``zoo fit --recipe digits`` (its defaults, ``max_epochs`` = ``epochs``, and the epoch clock; ``tiny``: the
    :data:`TINY` network) in ``cwd``: wall time and what it did."""
    import torch

    zoo = Path(sys.executable).with_name("zoo")
    clock = {"class_path": "epoch_clock.EpochClock", "init_args": {"path": str(cwd / "clock.json")}}
    command = [str(zoo), "fit", "--recipe", "digits", "--trainer.max_epochs", str(epochs)]
    command.append(f"--trainer.callbacks+={json.dumps(clock)}")
    if tiny:
        command += ["--model.model_kwargs", json.dumps(TINY)]
    env = {
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    code, wall, cpu, output = in_terminal(command, cwd, env)
    if code:
        raise SystemExit(f"zoo fit failed (exit {code}):\n{output[-3000:]}")
    (run,) = sorted(cwd.glob("runs/digits/version_*"))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    test = [float(r["test/top1"]) for r in rows if r.get("test/top1")]
    outputs = sorted(p.name for p in run.iterdir())
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    network = [t for k, t in last["state_dict"].items() if k.startswith("model.")]
    return {
        "wall": wall,
        "cpu": cpu,
        "steps": last["global_step"],
        "network_size": sum(t.numel() for t in network),
        "clock": json.loads((cwd / "clock.json").read_text()),
        "test_top1": test[-1] if test else None,
        "outputs": outputs,
    }


def plain_run(epochs: int, cwd: Path, env: dict | None = None, tiny: bool = False) -> dict:
    """The plain loop in a fresh process (this file's ``plain`` command): wall time and what it did."""
    result = cwd / "plain.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "plain",
        "--epochs",
        str(epochs),
        "--out",
        str(result),
    ] + (["--tiny"] if tiny else [])
    code, wall, cpu, output = in_terminal(command, cwd, env)
    if code:
        raise SystemExit(f"the plain loop failed (exit {code}):\n{output[-3000:]}")
    return {"wall": wall, "cpu": cpu, **json.loads(result.read_text())}


def measure(repeats: int, epochs: int, threads: int = 1, log=print, tiny: bool = False) -> dict:
    """Interleaved fresh-process runs of both sides with ``threads`` intra-op threads each (``OMP_NUM_THREADS``);
    raises if they did not run the same optimizer steps."""
    env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    runs: dict[str, list[dict]] = {"zoo": [], "plain": []}
    for i in range(repeats):
        order = ("zoo", "plain") if i % 2 == 0 else ("plain", "zoo")  # neither side always runs first
        for side in order:
            with tempfile.TemporaryDirectory() as tmp:
                result = (zoo_run if side == "zoo" else plain_run)(epochs, Path(tmp), env, tiny)
            runs[side].append(result)
            log(f"repeat {i + 1}/{repeats} {side}{' (tiny network)' if tiny else ''}: {result['wall']:.1f} s")
    done = {side: {(r["steps"], r["network_size"]) for r in rs} for side, rs in runs.items()}
    if done["zoo"] != done["plain"] or len(done["zoo"]) != 1:
        raise SystemExit(f"the two sides ran different (optimizer steps, network sizes): {done}")
    return summarise(runs)


PARTS = ("epoch", "train", "val", "end")


def parts(clock: list[list[float]]) -> dict[str, float]:
    """Median seconds of each epoch (its start to the next one's, so one fewer than the epochs) and of its parts:
    training (to the validation's start), validation, and the end (the validation's end to the next start:
    checkpoints, logs)."""
    pairs = list(zip(clock, clock[1:]))
    return {
        "epoch": statistics.median(b[0] - a[0] for a, b in pairs),
        "train": statistics.median(a[1] - a[0] for a, _ in pairs),
        "val": statistics.median(a[2] - a[1] for a, _ in pairs),
        "end": statistics.median(b[0] - a[2] for a, b in pairs),
    }


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Medians over the repeats of the wall time, the epoch time (each run's median span) and the fixed cost;
    the overhead per step from the two sides' medians, and paired (each run against its neighbour)."""
    plain = runs["plain"][0]
    steps_per_epoch = plain["steps_per_epoch"] + plain["val_batches"]
    out: dict = {"steps": plain["steps"], "steps_per_epoch": steps_per_epoch, "runs": runs}
    for side, rs in runs.items():
        for r in rs:
            r.update(parts(r["clock"]))
            epochs = r["clock"][-1][0] - r["clock"][0][0] + r["epoch"]  # the last one at the run's median
            r["fixed"] = r["wall"] - epochs
        out[side] = {k: statistics.median(r[k] for r in rs) for k in ("wall", "fixed", "cpu", *PARTS)}
    pairs = list(zip(runs["plain"], runs["zoo"]))
    out["paired_ratio"] = statistics.median(p["wall"] / z["wall"] for p, z in pairs)
    out["paired_cpu_ratio"] = statistics.median(p["cpu"] / z["cpu"] for p, z in pairs)
    out["step_overhead_ms"] = (out["zoo"]["epoch"] - out["plain"]["epoch"]) / steps_per_epoch * 1e3
    # each zoo run against the plain run next to it: less of the machine's drift than two medians apart
    paired = statistics.median(z["epoch"] - p["epoch"] for p, z in pairs)
    out["paired_step_overhead_ms"] = paired / steps_per_epoch * 1e3
    return out


def rows(result: dict) -> list[str]:
    """The table rows: figure | zoo | plain loop | ratio (plain / zoo: 1 means no tax)."""
    z, p = result["zoo"], result["plain"]
    spe, train = result["steps_per_epoch"], result["runs"]["plain"][0]["steps_per_epoch"]
    out = [
        f"| `zoo fit --recipe digits`, wall time, s (target: ratio ≥ 0.9) | {z['wall']:.1f} | {p['wall']:.1f} "
        f"| {p['wall'] / z['wall']:.2f} |",
        f"| …fixed cost (start, set-up, end of fit, test), s | {z['fixed']:.1f} | {p['fixed']:.1f} "
        f"| {p['fixed'] / z['fixed']:.2f} |",
        f"| …per epoch ({spe} steps), start to start, ms | {1e3 * z['epoch']:.1f} | {1e3 * p['epoch']:.1f} "
        f"| {p['epoch'] / z['epoch']:.2f} |",
    ]
    what = {"train": f"training ({train} steps)", "val": f"validation ({spe - train} batches)",
            "end": "validation's end to the next epoch (checkpoints, logs)"}  # fmt: skip
    out += [f"| ……{text}, ms | {1e3 * z[k]:.1f} | {1e3 * p[k]:.1f} | {p[k] / z[k]:.2f} |"
            for k, text in what.items()]  # fmt: skip
    return (
        out
        + step_overhead_rows(result)
        + [
            f"| …CPU time of the whole run (all threads and processes), s | {z['cpu']:.1f} | {p['cpu']:.1f} "
            f"| {p['cpu'] / z['cpu']:.2f} |",
        ]
    )


def step_overhead_rows(result: dict) -> list[str]:
    """The overhead per step of a :func:`summarise` result: from the two sides' medians, and paired."""
    return [
        f"| …overhead per step, ms (target ≤ 0.5) | {result['step_overhead_ms']:.2f} | 0 | |",
        f"| …overhead per step, each zoo run against the plain run beside it (median), ms "
        f"| {result['paired_step_overhead_ms']:.2f} | 0 | |",
    ]


def overhead_rows(tiny: dict) -> list[str]:
    """Rows of the run with the :data:`TINY` network: its epoch time and the overhead per step."""
    z, p = tiny["zoo"], tiny["plain"]
    return [
        f"| per epoch with a 4-channel, 1-block network (the loop around it, nearly all), ms "
        f"| {1e3 * z['epoch']:.1f} | {1e3 * p['epoch']:.1f} | {p['epoch'] / z['epoch']:.2f} |",
        *step_overhead_rows(tiny),
    ]


def throughput_rows(result: dict) -> list[str]:
    """Rows of :func:`synthetic_fit.compare`: images/s and CPU ms per image (ratio zoo / plain in speed)."""
    z, p, spec = result["zoo"], result["plain"], result["spec"]
    what = f"{spec['arch']} at {spec['size']}×{spec['size']}, batch {spec['batch']}"
    rows = [
        f"| training throughput, images/s, {what} (target: ratio ≥ 0.99) | {z['images_per_s']:.1f} "
        f"| {p['images_per_s']:.1f} | {result['ratio']:.3f} |",
        f"| …CPU ms per training image | {z['cpu_ms_per_image']:.1f} | {p['cpu_ms_per_image']:.1f} "
        f"| {result['cpu_ratio']:.3f} |",
    ]
    if "flush_ratio" in result:
        f = result["plain+flush"]
        rows.append(
            f"| …images/s against the plain loop flushing subnormals too (the zoo's default) "
            f"| {z['images_per_s']:.1f} | {f['images_per_s']:.1f} | {result['flush_ratio']:.3f} |"
        )
    return rows


NOTES = """Fresh processes, alternately, each side's output to a pseudo-terminal (the zoo's progress bar draws),
`OMP_NUM_THREADS=1` on both sides; the zoo keeps every default output of the recipe. Ratio: plain / zoo in
time (1: no tax). An epoch runs from its start to the next one's (training, validation, then checkpoints and
logs); overhead per step = (zoo epoch − plain epoch) / steps per epoch. The 4-channel network's rows: the same
two programs with a network of one 4-channel block, whose compute is small. The throughput rows run in one process, both sides alternately: `zoo fit --recipe synthetic`'s
trainer and callbacks (``build_recipe``) against a plain loop on the same images (benchmarks/synthetic_fit.py);
ratio: zoo / plain in images/s."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["plain"], help="run the plain loop once")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of both sides (0: torch's default, one per core)",
    )
    parser.add_argument("--out", type=Path, help="plain: where to write its JSON; else the results folder")
    parser.add_argument("--no-write", action="store_true", help="print the table rows only")
    parser.add_argument("--tiny", action="store_true", help="plain: with the overhead rows' network")
    parser.add_argument(
        "--overhead-repeats", type=int, default=5, help="runs of each side with the tiny network (0: none)"
    )
    parser.add_argument("--throughput-repeats", type=int, default=3, help="0: no throughput rows")
    parser.add_argument(
        "--throughput-steps",
        type=int,
        default=16,
        help="training batches per epoch (the last epoch is timed)",
    )
    args = parser.parse_args(argv)
    if args.command == "plain":
        with tempfile.TemporaryDirectory() as tmp:
            result = plain_fit(args.epochs, Path(tmp), tiny=args.tiny)
        (args.out or Path("plain.json")).write_text(json.dumps(result))
        return 0
    import record

    where = record.machine()
    result = measure(args.repeats, args.epochs, args.threads)
    table = rows(result)
    if args.overhead_repeats:
        result["tiny"] = measure(args.overhead_repeats, args.epochs, args.threads, tiny=True)
        table += overhead_rows(result["tiny"])
    if args.throughput_repeats:
        from synthetic_fit import compare

        result["throughput"] = compare(
            "resnet18", 64, 32, args.throughput_steps, repeats=args.throughput_repeats, flush_baseline=True
        )
        table += throughput_rows(result["throughput"])
    if not args.no_write:
        settings = {k: v for k, v in vars(args).items() if k not in ("command", "out", "no_write")}
        title = "Framework tax: `zoo fit` vs a plain PyTorch loop"
        record.write(
            "framework_tax", title, where, settings, result, table, NOTES, args.out or record.RESULTS
        )
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
