"""GPU benchmark, ready to run: ResNet-50 at 224×224 on synthetic data, the speed switches and the framework tax.

    .venv/bin/python benchmarks/gpu.py                         (one GPU: under 5 minutes)
    .venv/bin/python benchmarks/gpu.py --device cpu --arch resnet18 --size 32 --batch 4 --steps 2 --repeats 1 \\
        --configs fp32 bf16-mixed --no-write                   (the test's size, on a CPU)

1. Switches: training steps (forward, cross-entropy, backward, SGD momentum step) on one fixed batch already on
   the device, through the zoo's own switches: fp32; ``bf16-mixed`` (Lightning's precision plugin, the autocast a
   ``Trainer(precision="bf16-mixed")`` runs the step in); + ``ImageClassifier(channels_last=True)``; +
   ``ImageClassifier(compile=True)`` (``torch.compile``, timed after its compilation, which is reported apart).
   Images/s = batch × steps / seconds, medians of interleaved repeats, next to NVIDIA's published 2,470 images/s
   for ResNet-50 trained with automatic mixed precision on one A100 (NVIDIA Deep Learning Examples, ResNet-50
   v1.5 for PyTorch): another GPU and another input pipeline, a landmark rather than a baseline.
2. Framework tax: ``zoo fit --recipe synthetic``'s trainer and callbacks against a plain PyTorch loop on the
   same images (benchmarks/synthetic_fit.py) at bf16-mixed + channels_last; target zoo / plain ≥ 0.95 in
   images/s.

Writes benchmarks/results/gpu.json and gpu.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import record
import synthetic_fit
import torch

NVIDIA_A100_AMP = 2470  # images/s, ResNet-50 v1.5 training, AMP, one A100 (NVIDIA Deep Learning Examples)
CONFIGS = ("fp32", "bf16-mixed", "bf16-mixed + channels_last", "bf16-mixed + channels_last + compile")


def train_step(
    arch: str, size: int, batch: int, config: str, device: torch.device
) -> tuple[Callable[[], None], float]:
    """A closure running one training step with ``config`` on ``device``, and the seconds its first two steps took
    (compilation, cuDNN's algorithm search, the allocator)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from zoo.training.module import ImageClassifier

    torch.manual_seed(0)
    module = ImageClassifier(
        arch, num_classes=1000, channels_last="channels_last" in config, compile="compile" in config
    )
    module = module.to(device).train()
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    precision = MixedPrecision("bf16-mixed", device.type) if config.startswith("bf16") else None

    def step() -> None:
        with precision.forward_context() if precision else torch.enable_grad():
            loss = module.loss(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    start = time.perf_counter()
    for _ in range(2):
        step()
    synthetic_fit._sync(device)
    return step, time.perf_counter() - start


def measure_switches(
    arch: str, size: int, batch: int, steps: int, repeats: int, configs, device, log=print
) -> dict:
    """{config: {"images_per_s": median, "setup_s": first two steps, "per_repeat": [...]}}, configs interleaved."""
    runs = {c: train_step(arch, size, batch, c, device) for c in configs}
    rates: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(repeats):
        for c in configs:
            synthetic_fit._sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                runs[c][0]()
            synthetic_fit._sync(device)
            rates[c].append(batch * steps / (time.perf_counter() - start))
    out = {
        c: {"images_per_s": statistics.median(r), "setup_s": runs[c][1], "per_repeat": r}
        for c, r in rates.items()
    }
    log({c: round(v["images_per_s"], 1) for c, v in out.items()}, "images/s")
    return out


def rows(result: dict) -> list[str]:
    """Table rows: figure | zoo | baseline from the same run (fp32; the plain loop) | ratio; NVIDIA's landmark."""
    spec, switches = result["spec"], result["switches"]
    what = f"{spec['arch']} at {spec['size']}, batch {spec['batch']}, training images/s"
    base = switches["fp32"]["images_per_s"]
    out = []
    for config, v in switches.items():
        if config == "fp32":
            continue
        note = f" (compiled in {v['setup_s']:.0f} s)" if "compile" in config else ""
        out.append(
            f"| {what}: {config}{note} vs fp32 | {v['images_per_s']:.0f} | {base:.0f} | {base and v['images_per_s'] / base:.2f} |"
        )
    best = max(v["images_per_s"] for v in switches.values())
    out.append(
        f"| {what}: the fastest switch vs NVIDIA's A100 AMP figure (published) | {best:.0f} | {NVIDIA_A100_AMP} | {best / NVIDIA_A100_AMP:.2f} |"
    )
    fit = result.get("fit")
    if fit:
        z, p = fit["zoo"]["images_per_s"], fit["plain"]["images_per_s"]
        out.append(
            f"| `zoo fit` vs a plain loop, {what}, bf16-mixed + channels_last (target ≥ 0.95) | {z:.0f} | {p:.0f} | {fit['ratio']:.3f} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--steps", type=int, default=20, help="steps per timing (switches); batches per epoch (fit)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--no-fit", action="store_true", help="switches only")
    parser.add_argument("--out", type=Path, default=record.RESULTS, help="folder of gpu.json / .md")
    parser.add_argument("--no-write", action="store_true", help="print the table rows only")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --device cpu at a tiny size")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = (
            True  # fixed shapes: let cuDNN pick its fastest algorithms (both sides)
        )
    where = record.machine()
    spec = {"arch": args.arch, "size": args.size, "batch": args.batch, "steps": args.steps}
    result: dict = {"spec": spec}
    result["switches"] = measure_switches(
        args.arch, args.size, args.batch, args.steps, args.repeats, args.configs, device
    )
    if not args.no_fit:
        result["fit"] = synthetic_fit.compare(
            args.arch, args.size, args.batch, args.steps, precision="bf16-mixed", channels_last=True,
            device=device.type, repeats=args.repeats, threads=0,
        )  # fmt: skip
    table = rows(result)
    if not args.no_write:
        settings = {k: v for k, v in vars(args).items() if k not in ("out", "no_write")}
        record.write(
            "gpu",
            "GPU: ResNet-50 at 224, switches and framework tax",
            where,
            settings,
            result,
            table,
            __doc__.split("\n\n", 2)[2],
            args.out,
        )
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
