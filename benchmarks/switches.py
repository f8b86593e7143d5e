"""Speed switches on this machine: training steps/s of a network with each of the zoo's switches, side by side.

    .venv/bin/python benchmarks/switches.py [--repeats 5 --steps 4]

A step is what a training step does (forward, cross-entropy, backward, SGD momentum step) on a fixed batch, through
the zoo's own switches: ``ImageClassifier(channels_last=True)``, Lightning's ``bf16-mixed`` precision plugin
(its ``forward_context``, the autocast a ``Trainer(precision="bf16-mixed")`` runs the step in) and
``ImageClassifier(compile=True)`` (``torch.compile``, inductor: timed after its compilation, which is reported
apart). Every repeat times each configuration once, in turn; the figures are medians over the repeats, the
baseline fp32 with the default memory order. Also the digits recipe's training loader with 0 and 2 workers (an
epoch of batches as the training loop draws them, persistent workers started beforehand).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import record
import torch

CASES = {
    # name: (arch, image side, batch, channels): the digits-style CNN, resnet18 at 64 (from scratch), efficientnet_lite0
    # at 224 (the finetune recipe's backbone: depthwise convolutions)
    "resnet18@64": ("resnet18", 64, 32, 3),
    "efficientnet_lite0@224": ("timm/efficientnet_lite0", 224, 16, 3),
}
CONFIGS = ("fp32", "channels_last", "bf16-mixed", "bf16-mixed + channels_last", "compile")


def train_step(arch: str, side: int, batch: int, chans: int, config: str) -> tuple[Callable[[], None], float]:
    """A closure running one training step with ``config``, and the seconds its set-up took (compilation)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from zoo.training.module import ImageClassifier

    torch.manual_seed(0)
    module = ImageClassifier(
        arch,
        num_classes=10,
        in_chans=chans,
        channels_last="channels_last" in config,
        compile=config == "compile",
    ).train()
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, chans, side, side), torch.randint(0, 10, (batch,))
    precision = MixedPrecision("bf16-mixed", "cpu") if config.startswith("bf16") else None

    def step() -> None:
        if precision is None:
            loss = module.loss(module(x), y)
        else:
            with precision.forward_context():
                loss = module.loss(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    step()  # warm-up: compilation, allocator, oneDNN primitives
    return step, time.perf_counter() - start


def measure_switches(cases: dict, configs=CONFIGS, repeats: int = 5, steps: int = 4, log=print) -> dict:
    """{case: {config: {"step_s": median seconds per step, "setup_s": first step}}}, configurations interleaved."""
    out: dict = {}
    for case, spec in cases.items():
        runs = {c: train_step(*spec, c) for c in configs}
        times: dict[str, list[float]] = {c: [] for c in configs}
        for _ in range(repeats):
            for c in configs:
                start = time.perf_counter()
                for _ in range(steps):
                    runs[c][0]()
                times[c].append((time.perf_counter() - start) / steps)
        out[case] = {c: {"step_s": statistics.median(times[c]), "setup_s": runs[c][1]} for c in configs}
        log(case, {c: round(v["step_s"] * 1e3, 1) for c, v in out[case].items()}, "ms/step")
    return out


def measure_workers(workers=(0, 2), repeats: int = 5, log=print) -> dict:
    """Seconds per epoch of the digits recipe's training loader with each number of workers (median, interleaved)."""
    from zoo.data import DigitsDataModule

    loaders = {}
    for n in workers:
        data = DigitsDataModule(batch_size=64, num_workers=n)
        data.setup()
        loaders[n] = data.train_dataloader()
        for _ in loaders[n]:  # start the (persistent) workers
            pass
    times: dict[int, list[float]] = {n: [] for n in workers}
    for _ in range(repeats):
        for n in workers:
            start = time.perf_counter()
            for _ in loaders[n]:
                pass
            times[n].append(time.perf_counter() - start)
    out = {n: statistics.median(t) for n, t in times.items()}
    log("digits loader", {n: round(t * 1e3) for n, t in out.items()}, "ms/epoch")
    return out


NOTES = """Training steps on one fixed batch through the zoo's switches; ratio: baseline / with the switch (above 1:
faster). Medians of interleaved repeats, torch on one thread. The loader rows time an epoch of the digits recipe's
training batches (persistent workers started beforehand)."""


def rows(result: dict) -> list[str]:
    """Table rows: figure | with the switch | baseline (fp32, default memory order / 0 workers) | ratio (speed-up)."""
    out = []
    for case, by_config in result["switches"].items():
        base = by_config["fp32"]["step_s"]
        for config, v in by_config.items():
            if config == "fp32":
                continue
            note = f" (compiled in {v['setup_s']:.0f} s)" if config == "compile" else ""
            out.append(
                f"| {case} training step, ms: {config}{note} | {v['step_s'] * 1e3:.0f} | {base * 1e3:.0f} "
                f"| {base / v['step_s']:.2f} |"
            )
    loaders = result.get("workers") or {}
    if 0 in loaders:
        for n, t in loaders.items():
            if n:
                out.append(
                    f"| digits training loader, ms per epoch: {n} workers vs 0 | {t * 1e3:.0f} | {loaders[0] * 1e3:.0f} "
                    f"| {loaders[0] / t:.2f} |"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps per timing")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=1, help="torch's intra-op threads (0: its default)")
    parser.add_argument("--out", type=Path, default=record.RESULTS, help="folder of switches.json / .md")
    parser.add_argument("--no-write", action="store_true", help="print the table rows only")
    args = parser.parse_args(argv)
    if args.threads:  # one thread: a busy machine stalls two threads at every barrier
        torch.set_num_threads(args.threads)
    where = record.machine()
    cases = {c: CASES[c] for c in args.cases}
    result = {
        "switches": measure_switches(cases, args.configs, args.repeats, args.steps),
        "workers": measure_workers(repeats=args.repeats),
    }
    table = rows(result)
    if not args.no_write:
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "no_write")}
        record.write(
            "switches", "Speed switches on this machine", where, settings, result, table, NOTES, args.out
        )
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
