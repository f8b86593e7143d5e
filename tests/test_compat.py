"""Each private name ``zoo/compat.py`` relies on is still where it was, with the signature it was called with: a
library release that moves one fails here, by name, instead of somewhere in a run."""

from __future__ import annotations

import inspect

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger

from zoo import compat


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("_should_skip_saving_checkpoint", ["self", "trainer"]),
        ("_should_save_on_train_epoch_end", ["self", "trainer"]),
        ("_save_last_checkpoint", ["self", "trainer", "monitor_candidates"]),
        ("_monitor_candidates", ["self", "trainer"]),
    ],
)
def test_model_checkpoint_methods_checkpoint_saves_calls(method, params):
    assert parameters(getattr(ModelCheckpoint, method)) == params


def test_the_cli_hook_that_reads_a_checkpoints_hparams():
    assert parameters(LightningCLI._parse_ckpt_path) == ["self"]
    source = inspect.getsource(LightningCLI.__init__)
    # called after parsing and before the classes are built, which the zoo's version relies on
    assert source.index("self.parse_arguments(") < source.index("self._parse_ckpt_path()")
    assert source.index("self._parse_ckpt_path()") < source.index("self.before_instantiate_classes()")
    # the keys it takes out of the hyper-parameters, as compat.cli_model_hparams does
    text = inspect.getsource(LightningCLI._parse_ckpt_path)
    assert '"_instantiator"' in text and '"_class_path"' in text
    saved = {
        "hyper_parameters": {"_instantiator": "x", "_class_path": "zoo.ImageClassifier", "arch": "convnet"}
    }
    assert compat.cli_model_hparams(saved) == {
        "class_path": "zoo.ImageClassifier",
        "dict_kwargs": {"arch": "convnet"},
    }


def test_callback_state_keys_are_lightnings():
    class Mine(Callback):
        pass

    assert compat.state_key(Mine(), a=1) == Mine.__qualname__ + "{'a': 1}"
    checkpoint = ModelCheckpoint(monitor="val/loss")
    assert checkpoint.state_key == compat.state_key(
        checkpoint,
        monitor="val/loss",
        mode="min",
        every_n_train_steps=0,
        every_n_epochs=1,
        train_time_interval=None,
    )


def test_weight_averaging_keeps_its_last_epoch_where_compat_reads_it():
    ema = EMAWeightAveraging()
    assert compat.ema_latest_update_epoch(ema) == -1
    compat.set_ema_latest_update_epoch(ema, 3)
    assert ema._latest_update_epoch == 3


def test_wandb_logger_settings_and_run():
    logger = WandbLogger(mode="disabled", project="p")
    assert compat.wandb_init_settings(logger)["project"] == "p"
    assert compat.wandb_run(logger) is None  # not created yet


def test_trainer_internals_request_stop_and_validate_in_fit_use():
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    compat.request_stop(trainer)
    assert trainer.received_sigterm
    assert parameters(trainer.fit_loop.epoch_loop._should_check_val_epoch) == []
    assert hasattr(trainer._logger_connector, "_first_loop_iter")
    loop = trainer.fit_loop.epoch_loop.val_loop
    assert hasattr(loop, "restarting") and hasattr(loop, "skip") and callable(loop.run)


def test_ddp_hook_removal():
    from torch.nn.parallel import DistributedDataParallel

    assert parameters(DistributedDataParallel._remove_autograd_hooks) == ["self"]


def test_torch_layer_bases():
    nn = torch.nn
    batch_norms = (nn.BatchNorm1d(2), nn.BatchNorm2d(2), nn.BatchNorm3d(2), nn.SyncBatchNorm(2))
    assert all(isinstance(m, compat.batch_norm_base()) for m in batch_norms)
    assert not isinstance(nn.InstanceNorm2d(2), compat.batch_norm_base())
    assert isinstance(nn.InstanceNorm2d(2, track_running_stats=True), compat.norm_base())
    assert not isinstance(nn.LayerNorm(2), compat.norm_base())
    dropouts = (nn.Dropout(), nn.Dropout1d(), nn.Dropout2d(), nn.Dropout3d(), nn.AlphaDropout())
    assert all(isinstance(m, compat.dropout_base()) for m in dropouts)


def test_torchdata_state_keys():
    from torchdata.stateful_dataloader import StatefulDataLoader
    from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler

    data = list(range(8))
    sampler = StatefulDistributedSampler(data, num_replicas=1, rank=0, shuffle=False)
    next(iter(sampler))
    assert compat.sampler_position_key() in sampler.state_dict()
    for workers in (0, 1):
        loader = StatefulDataLoader(data, batch_size=2, num_workers=workers)
        batches = iter(loader)
        next(batches)
        assert compat.loader_state_workers(loader.state_dict()) == workers


def test_litdata_filesystem_client():
    pytest.importorskip("litdata")
    from litdata.streaming import fs_provider

    assert parameters(fs_provider._get_fs_provider)[:2] == ["remote_filepath", "storage_options"]


def test_lightning_passes_over_a_hook_that_is_not_callable():
    """``skip_empty_hooks`` sets empty hooks to None: Lightning's dispatch must skip them, not call them."""
    from lightning.pytorch.trainer import call

    assert "if callable(fn):" in inspect.getsource(call._call_callback_hooks)

    class Empty(Callback):
        pass

    empty = Empty()
    assert compat.skip_empty_hooks([empty]) == 6  # every hook of a training step
    assert empty.on_train_batch_end is None and callable(empty.on_train_epoch_end)


def test_every_entry_names_the_versions_it_was_checked_on():
    """Each function and class of zoo/compat.py has a row in its table, whose last column gives versions, the
    installed Lightning's among those of the rows that rely on Lightning."""
    import ast
    import re
    from pathlib import Path

    import lightning

    rows = [line for line in compat.__doc__.splitlines() if line.startswith("| :")]
    named = {name for row in rows for name in re.findall(r":(?:func|class):`(\w+)`", row)}
    tree = ast.parse(Path(compat.__file__).read_text())
    public = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    helpers = {"cli_model_hparams"}  # CheckpointHparams's row: the same private hook's keys
    missing = [name for name in public if not name.startswith("_") and name not in named | helpers]
    assert not missing, f"zoo/compat.py: no row in the table for {missing}"
    for row in rows:
        checked = row.rstrip(" |").rsplit("|", 1)[-1]
        assert re.search(r"\d+\.\d+", checked), row
        if "lightning" in checked:
            assert lightning.__version__ in checked, f"not checked on the installed lightning: {row}"
