"""The LightningModule and what it trains with: optimizers, metrics, mixup, the guard against bad steps, frozen
layers, the linear probe, test-time augmentation and the reading of its loss curves."""
