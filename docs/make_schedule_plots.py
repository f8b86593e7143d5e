"""Draw the schedule plots of ``docs/optimizers.md`` (``python docs/make_schedule_plots.py``).

Each plot steps the zoo's own schedule callbacks through a run with ``callbacks.lr_schedule.simulate``, the
code that sets the lr in training, and draws it with ``zoo schedule``'s plotting function.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from callbacks import (
    CosineDecay,
    ExponentialDecay,
    InverseTimeDecay,
    LinearWarmup,
    MultiStepDecay,
    StepDecay,
)
from callbacks.lr_schedule import simulate
from recipes.commands.schedule import draw

OUT = Path(__file__).parent / "img"
STEPS_PER_EPOCH = 50

# file -> (title, epochs, schedules, {group: base lr})
PLOTS = {
    "schedule_step.png": (
        "ImageNet classic: lr 0.1, StepDecay(30, γ=0.1)",
        90,
        lambda: [StepDecay(30, gamma=0.1)],
        {"model": 0.1},
    ),
    "schedule_first_lr_longer.png": (
        "Train the first lr longer: MultiStepDecay([50, 60]), 70 epochs",
        70,
        lambda: [MultiStepDecay([50, 60], gamma=0.1)],
        {"model": 0.1},
    ),
    "schedule_cosine.png": (
        "CosineDecay (floor 0) and CosineDecay(floor=0.1)",
        90,
        None,
        None,
    ),
    "schedule_warmup_cosine.png": (
        "LinearWarmup(5) × CosineDecay(): lr 0.4 (batch 1024)",
        90,
        lambda: [LinearWarmup(5), CosineDecay()],
        {"model": 0.4},
    ),
    "schedule_exp_inverse.png": (
        "ExponentialDecay(k=0.05) and InverseTimeDecay(k=0.1)",
        90,
        None,
        None,
    ),
    "schedule_finetune.png": (
        "Fine-tuning: backbone at 0.1× the head, LinearWarmup(2) × CosineDecay()",
        30,
        lambda: [LinearWarmup(2), CosineDecay()],
        {"head": 0.01, "backbone": 0.001},
    ),
}


def curve(schedules, epochs: int, base_lrs: dict[str, float]) -> dict[str, list[float]]:
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr, "name": n} for n, lr in base_lrs.items()]
    lrs = simulate(schedules, torch.optim.SGD(groups, lr=0.1), STEPS_PER_EPOCH, epochs * STEPS_PER_EPOCH)
    return {name: [row[i] for row in lrs] for i, name in enumerate(base_lrs)}


def main() -> None:
    for file, (title, epochs, make, base_lrs) in PLOTS.items():
        if file == "schedule_cosine.png":
            curves = {
                "floor 0": curve([CosineDecay()], epochs, {"m": 0.1})["m"],
                "floor 0.1": curve([CosineDecay(floor=0.1)], epochs, {"m": 0.1})["m"],
            }
        elif file == "schedule_exp_inverse.png":
            curves = {
                "exponential": curve([ExponentialDecay(0.05)], epochs, {"m": 0.1})["m"],
                "1/t": curve([InverseTimeDecay(0.1)], epochs, {"m": 0.1})["m"],
            }
        else:
            curves = curve(make(), epochs, base_lrs)
        x = [s / STEPS_PER_EPOCH for s in range(epochs * STEPS_PER_EPOCH)]
        legend = "param group" if base_lrs else "schedule"
        draw(OUT / file, x, curves, [], title, log=file == "schedule_finetune.png", legend=legend)
        print(f"wrote {OUT / file}")


if __name__ == "__main__":
    main()
