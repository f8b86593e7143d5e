"""Training throughput of ``zoo fit`` against a plain PyTorch loop on the same synthetic images.

Both sides train the same network (``zoo.create_model``) on the synthetic recipe's data module (``pool`` images
drawn once and cycled: no generation cost per step) with the recipe's optimizer (SGD momentum 0.9, lr 0.1, weight
decay 5e-4 off biases and norms), the same precision and memory order, one validation batch per epoch:

- zoo: the synthetic recipe as ``zoo fit`` builds it (``build_recipe``: its checkpoints, CSV log, lr monitor,
  throughput, end-of-fit report and loss-curve reading callbacks, progress bar), then ``Trainer.fit``;
- plain: a ``DataLoader`` over the same split, ``torch.autocast`` for bf16, ``x.to(memory_format=...)``; with
  ``flush=True`` (the "plain+flush" side) it also flushes subnormal floats to zero, as the zoo does by default
  (:mod:`callbacks.denormals`), which shows what is left of the difference with the same arithmetic.

The figure is images / seconds of the training part of the last epoch (validation excluded: the zoo's
``EpochThroughput.last``, the same span in the plain loop), and its CPU seconds (``time.process_time``: all
threads of the process), which the machine's other load hardly changes. Each side also records what it trained on
(optimizer steps, images per class, and the sorted per-image sums of what reached the network), so that a test
checks both sides did the same work.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

LR, MOMENTUM, WEIGHT_DECAY, VAL_BATCHES = 0.1, 0.9, 5e-4, 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Seen:
    """What reached the network: images per class, sorted per-image sums (float64), optimizer steps."""

    def __init__(self, num_classes: int):
        self.counts = torch.zeros(num_classes, dtype=torch.long)
        self.sums: list[float] = []
        self.steps = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.counts += torch.bincount(y.cpu(), minlength=len(self.counts))
        self.sums += x.detach().double().flatten(1).sum(1).cpu().tolist()

    def result(self) -> dict:
        return {"steps": self.steps, "class_counts": self.counts.tolist(), "image_sums": sorted(self.sums)}


@contextlib.contextmanager
def _inside(folder: Path):
    """Run in ``folder`` (the recipe writes ``runs/`` relative to the working directory)."""
    saved = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(saved)


def data_options(size: int, batch: int, steps: int, classes: int) -> dict:
    """The synthetic data module's options: ``steps`` batches of ``batch`` per epoch, one validation batch."""
    return dict(num_classes=classes, image_size=size, num_channels=3, train_size=batch * steps,
                val_size=batch * VAL_BATCHES, test_size=0, pool=min(batch * steps, 4 * batch),
                batch_size=batch)  # fmt: skip


def zoo_side(arch: str, size: int, batch: int, steps: int, epochs: int, precision: str, channels_last: bool,
             device: str, classes: int = 10, record: bool = False) -> dict:  # fmt: skip
    """``zoo fit --recipe synthetic`` at this size (no test after fit): images/s of its last epoch's training."""
    from callbacks.denormals import denormal_mode
    from callbacks.throughput import EpochThroughput
    from recipes.lightning_cli import build_recipe, expand_recipe, quiet_lightning

    seen = Seen(classes)
    data = data_options(size, batch, steps, classes)
    args = ["--recipe", "synthetic", "--model.arch", arch, "--model.model_kwargs", "{}"]
    args += [f"--data.{k}={v}" for k, v in data.items()]
    args += ["--model.channels_last", str(channels_last).lower(), "--trainer.precision", precision]
    args += ["--trainer.max_epochs", str(epochs), "--trainer.accelerator", device]
    quiet = contextlib.redirect_stdout(
        io.StringIO()
    )  # the summary, bar and report of every repeat: not shown
    # the CLI sets the mode for its process: the plain side after this one gets the mode of before back
    with tempfile.TemporaryDirectory() as tmp, _inside(Path(tmp)), quiet, quiet_lightning(), denormal_mode():
        cli = build_recipe(expand_recipe(args))
        timer = next(c for c in cli.trainer.callbacks if isinstance(c, EpochThroughput))
        cpu = CPUTime()
        cli.trainer.callbacks += [cpu, Record(seen, images=record)]
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        last = timer.last
    out = {
        "images_per_s": last["images"] / last["train_time"],
        "cpu_ms_per_image": 1e3 * cpu.train_cpu / last["images"],
    }
    return {**out, **(seen.result() if record else {"steps": seen.steps})}


def plain_side(arch: str, size: int, batch: int, steps: int, epochs: int, precision: str, channels_last: bool,
               device: str, classes: int = 10, record: bool = False, flush: bool = False) -> dict:  # fmt: skip
    """The same training written as a PyTorch user would: images/s of its last epoch's training (``flush``:
    with subnormal floats flushed to zero, as the zoo's default)."""
    from callbacks.denormals import denormal_mode

    with denormal_mode(flush):
        return _plain(arch, size, batch, steps, epochs, precision, channels_last, device, classes, record)


def _plain(arch, size, batch, steps, epochs, precision, channels_last, device, classes, record) -> dict:
    import torch.nn.functional as F
    from timm.optim import param_groups_weight_decay
    from torch.utils.data import DataLoader

    import zoo
    from zoo.data import SyntheticDataModule

    dev = torch.device(device)
    torch.manual_seed(0)
    data = SyntheticDataModule(**data_options(size, batch, steps, classes))
    data.setup()
    pin = dev.type == "cuda"
    train = DataLoader(data.splits["train"], batch_size=batch, shuffle=True, drop_last=False, pin_memory=pin)
    val = DataLoader(data.splits["val"], batch_size=batch, pin_memory=pin)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = zoo.create_model(arch, num_classes=classes, in_chans=3).to(dev, memory_format=fmt)
    groups = param_groups_weight_decay(model, WEIGHT_DECAY)
    opt = torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM)
    bf16 = precision.startswith("bf16")
    autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    seen = Seen(classes)
    for _ in range(epochs):
        model.train()
        _sync(dev)
        start, cpu_start, images = time.perf_counter(), time.process_time(), 0
        for x, y in train:
            x = x.to(dev, non_blocking=True, memory_format=fmt)
            y = y.to(dev, non_blocking=True)
            if record:
                seen.add(x, y)
            with autocast():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen.steps += 1
            images += len(y)
        _sync(dev)
        train_time, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        model.eval()
        with torch.no_grad(), autocast():
            for x, y in val:
                F.cross_entropy(model(x.to(dev, memory_format=fmt)), y.to(dev)).item()
    out = {"images_per_s": images / train_time, "cpu_ms_per_image": 1e3 * train_cpu / images}
    return {**out, **(seen.result() if record else {"steps": seen.steps})}


class CPUTime(Callback):
    """CPU seconds of the process over the last epoch's training: the span :class:`callbacks.throughput.EpochThroughput`
    times in wall seconds (to the last training step, validations in between excluded)."""

    train_cpu = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start, self._val, self._end = time.process_time(), 0.0, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._end = None

    def on_validation_start(self, trainer, pl_module):
        self._val_start = time.process_time()
        if not trainer.sanity_checking and hasattr(self, "_start"):
            self._end, self._val_before = self._val_start, self._val

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and hasattr(self, "_start"):
            self._val += time.process_time() - self._val_start

    def on_train_epoch_end(self, trainer, pl_module):
        if self._end is None:
            self._end, self._val_before = time.process_time(), self._val
        self.train_cpu = self._end - self._start - self._val_before


class Record(Callback):
    """Counts every optimizer step in a :class:`Seen`, and hands it every training batch as the step receives it
    (``images``)."""

    def __init__(self, seen: Seen, images: bool):
        self.seen, self.images = seen, images

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.images:
            self.seen.add(*batch)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.seen.steps += 1


SIDES = {
    "zoo": zoo_side,
    "plain": plain_side,
    "plain+flush": lambda **spec: plain_side(**spec, flush=True),
}


def compare(arch: str, size: int, batch: int, steps: int, epochs: int = 2, precision: str = "32-true",
            channels_last: bool = False, device: str = "cpu", repeats: int = 3, threads: int = 1,
            flush_baseline: bool = False, log=print) -> dict:  # fmt: skip
    """Each side ``repeats`` times, in turn (a different one first each time); medians, and the median of each
    repeat's own ratio (zoo / plain in images/s: 1 means no tax); ``threads``: torch's intra-op threads (0: as it
    is); ``flush_baseline``: the plain loop with subnormals flushed as a third side (``flush_ratio``)."""
    spec = dict(arch=arch, size=size, batch=batch, steps=steps, epochs=epochs, precision=precision,
                channels_last=channels_last, device=device)  # fmt: skip
    if threads:  # one thread: a busy machine stalls two threads at every barrier
        torch.set_num_threads(threads)
    names = ["zoo", "plain"] + (["plain+flush"] if flush_baseline else [])
    runs: dict[str, list[dict]] = {side: [] for side in names}
    for i in range(repeats):
        for side in names[i % len(names) :] + names[: i % len(names)]:
            result = SIDES[side](**spec)
            runs[side].append(result)
            log(f"{arch}@{size} repeat {i + 1}/{repeats} {side}: {result['images_per_s']:.1f} images/s")
    steps = {side: {r["steps"] for r in rs} for side, rs in runs.items()}
    if len(set().union(*steps.values())) != 1:
        raise SystemExit(f"the sides ran different optimizer steps: {steps}")
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("images_per_s", "cpu_ms_per_image")}
           for s, rs in runs.items()}  # fmt: skip
    pairs = list(zip(runs["zoo"], runs["plain"]))
    out = {
        "spec": spec,
        "repeats": repeats,
        **med,
        "ratio": med["zoo"]["images_per_s"] / med["plain"]["images_per_s"],
        "paired_ratio": statistics.median(z["images_per_s"] / p["images_per_s"] for z, p in pairs),
        "cpu_ratio": med["plain"]["cpu_ms_per_image"] / med["zoo"]["cpu_ms_per_image"],
        "per_repeat": {s: [r["images_per_s"] for r in rs] for s, rs in runs.items()},
    }
    if flush_baseline:
        out["flush_ratio"] = med["zoo"]["images_per_s"] / med["plain+flush"]["images_per_s"]
        out["flush_cpu_ratio"] = med["plain+flush"]["cpu_ms_per_image"] / med["zoo"]["cpu_ms_per_image"]
    return out
