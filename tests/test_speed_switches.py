"""The speed switches are really applied in a training step: channels-last memory order in the forward pass,
bf16 autocast under ``precision: bf16-mixed``, a compiled network under ``model.compile``; and loader workers."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from zoo.data import DigitsDataModule, SyntheticDataModule
from zoo.training.module import ImageClassifier


class SeenInForward(Callback):
    """Records, in the first training step's forward pass, what the first convolution receives."""

    def __init__(self):
        self.seen: dict = {}

    def on_train_start(self, trainer, pl_module):
        conv = next(m for m in pl_module.model.modules() if isinstance(m, torch.nn.Conv2d))

        def hook(module, args, output):
            if not self.seen:
                (x,) = args
                self.seen = {
                    "input_channels_last": x.is_contiguous(memory_format=torch.channels_last)
                    and x.stride(1) == 1,
                    "weight_channels_last": module.weight.is_contiguous(memory_format=torch.channels_last),
                    "autocast": torch.is_autocast_enabled("cpu"),
                    "autocast_dtype": torch.get_autocast_dtype("cpu"),
                    "output_dtype": output.dtype,
                }

        self.handle = conv.register_forward_hook(hook)

    def on_train_end(self, trainer, pl_module):
        self.handle.remove()


def one_step(model: ImageClassifier, **trainer_kwargs) -> dict:
    seed_everything(0)
    seen = SeenInForward()
    data = SyntheticDataModule(num_classes=4, image_size=16, num_channels=3, train_size=8, val_size=4, test_size=0,
                               batch_size=4)  # fmt: skip
    trainer = Trainer(
        max_steps=1,
        limit_val_batches=0,
        accelerator="cpu",
        callbacks=[seen],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule=data)
    return seen.seen


def test_channels_last_reaches_the_convolutions():
    seen = one_step(ImageClassifier("resnet18", num_classes=4, channels_last=True))
    assert seen["input_channels_last"] and seen["weight_channels_last"]
    plain = one_step(ImageClassifier("resnet18", num_classes=4))
    assert not plain["input_channels_last"] and not plain["weight_channels_last"]


def test_bf16_mixed_runs_the_step_under_bf16_autocast():
    seen = one_step(ImageClassifier("resnet18", num_classes=4), precision="bf16-mixed")
    assert seen["autocast"] and seen["autocast_dtype"] == torch.bfloat16
    assert seen["output_dtype"] == torch.bfloat16  # the convolution ran in bf16
    assert one_step(ImageClassifier("resnet18", num_classes=4))["output_dtype"] == torch.float32


def test_compile_sends_the_network_through_torch_compile():
    graphs = []

    def backend(gm, example_inputs):  # a torch.compile backend that records the graphs and runs them eagerly
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    model = ImageClassifier("resnet18", num_classes=4, compile=True, compile_options={"backend": backend})
    one_step(model)
    ops = {str(n.target) for g in graphs for n in g.graph.nodes if n.op in ("call_function", "call_module")}
    assert graphs and any("conv2d" in op for op in ops)
    assert set(model.state_dict()) == set(
        ImageClassifier("resnet18", num_classes=4).state_dict()
    )  # same keys
    with pytest.raises(ValueError, match="unknown key"):
        ImageClassifier("resnet18", num_classes=4, compile=True, compile_options={"fast": True})


def test_loader_workers_and_persistence_reach_the_training_loader():
    def batches(workers: int) -> tuple:
        data = DigitsDataModule(batch_size=64, num_workers=workers)
        data.setup()
        loader = data.train_dataloader()
        return loader, [b for b in loader]

    loader, with_workers = batches(2)
    assert loader.num_workers == 2 and loader.persistent_workers
    assert not loader.pin_memory  # no CUDA device here: nothing to pin memory for
    _, in_process = batches(0)
    # the same images, shifted the same way, whoever reads them
    assert len(with_workers) == len(in_process)
    for (x2, y2), (x0, y0) in zip(with_workers, in_process):
        assert torch.equal(x2, x0) and torch.equal(y2, y0)
