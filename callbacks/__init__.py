"""Lightning callbacks of the zoo, one concern per file."""

import zoo  # noqa: F401  (first: zoo/__init__.py imports timm with wandb hidden, see zoo/compat.py)
from callbacks.decay import CosineDecay, ExponentialDecay, InverseTimeDecay, MultiStepDecay, StepDecay
from callbacks.denormals import FlushDenormals
from callbacks.ema import EMA
from callbacks.finetuning import FineTuning
from callbacks.last_checkpoint import LastCheckpoint
from callbacks.lighting import PCALighting
from callbacks.lr_monitor import LRMonitor
from callbacks.lr_plot import LRPlot
from callbacks.lr_schedule import LRSchedule
from callbacks.precise_bn import PreciseBN
from callbacks.predictions import PredictionWriter
from callbacks.report import ClassificationReport
from callbacks.snapshot import SnapshotEnsemble
from callbacks.stochastic_depth import StochasticDepth
from callbacks.throughput import EpochThroughput
from callbacks.wandb_run import WandbRunId
from callbacks.warmup import ConstantWarmup, LinearWarmup

__all__ = [
    "ClassificationReport",
    "ConstantWarmup",
    "EpochThroughput",
    "LRPlot",
    "WandbRunId",
    "CosineDecay",
    "ExponentialDecay",
    "FineTuning",
    "FlushDenormals",
    "InverseTimeDecay",
    "LRMonitor",
    "LRSchedule",
    "LastCheckpoint",
    "LinearWarmup",
    "MultiStepDecay",
    "PCALighting",
    "StepDecay",
    "PredictionWriter",
    "PreciseBN",
    "EMA",
    "SnapshotEnsemble",
    "StochasticDepth",
]
