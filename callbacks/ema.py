"""Parameter averaging (Polyak / EMA): validate, checkpoint and test an exponential moving average of the weights.

The averaging is Lightning's ``EMAWeightAveraging`` (torch's ``AveragedModel`` with ``get_ema_avg_fn``). The one
change: Lightning's callback, when the *fitting* trainer later loads a checkpoint to evaluate it (what ``zoo
fit`` does to test the best checkpoint), puts the checkpoint's raw weights (``current_model_state``) into the
model, so the test would score the raw weights instead of the average the checkpoint's ``state_dict`` holds.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import EMAWeightAveraging

from zoo import compat


class EMA(EMAWeightAveraging):
    """θ̄_1 = θ_1, θ̄_k = β·θ̄_{k−1} + (1 − β)·θ_k after every optimizer step k; validation and checkpoints use θ̄.

    Buffers (BatchNorm statistics) are averaged the same way unless ``use_buffers`` is False.

    Args:
        decay: β, about 1 − 10/(optimizer steps in the run), so the average spans the last tenth of it: 0.99 for
            the digits (1,000 steps), 0.9999 for ImageNet (Tan and Le 2021, EfficientNetV2: 350 epochs at batch
            4096, about 110,000 steps); the default 0.999 is Lightning's, for runs of about 10,000 steps.
        update_every_n_steps: average every n-th optimizer step.
        update_starting_at_step: first step (0-based) to average; earlier steps are skipped.
        update_starting_at_epoch: also average at the end of each epoch from this one on.
        use_buffers: average the buffers too.
        device: where the average lives (``cpu`` to save accelerator memory).
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        use_buffers: bool = True,
        device: str | None = None,
    ):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay={decay!r} must be in [0, 1)")
        super().__init__(
            device=device,
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )
        self.decay = decay

    def state_dict(self) -> dict:
        return {**super().state_dict(), "latest_update_epoch": compat.ema_latest_update_epoch(self)}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        epoch = state_dict.get("latest_update_epoch", compat.ema_latest_update_epoch(self))
        compat.set_ema_latest_update_epoch(self, epoch)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.state.fn == "fit":  # resuming: restore both the raw weights and the average
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
        # evaluating: keep the averaged weights the checkpoint's state_dict holds
