"""Costs the recipes' trainer avoids: a profiler entered at every hook when none is asked for, the checkpoint
callbacks' state keys (read at every hook) built at each read, and a deterministic run filling new tensors."""

from contextlib import nullcontext

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.profilers import SimpleProfiler

from callbacks.best_checkpoint import BestCheckpoint
from callbacks.last_checkpoint import LastCheckpoint
from zoo.profiler import NoProfiler

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]


def build(*extra: str):
    from recipes.lightning_cli import build_recipe, expand_recipe

    return build_recipe(expand_recipe(["--recipe", "digits", *TINY, *extra]))


def test_the_recipes_trainer_has_the_profiler_that_profiles_nothing_for_free():
    cli = build()
    assert type(cli.trainer.profiler) is NoProfiler
    with cli.trainer.profiler.profile("a"), cli.trainer.profiler.profile("b"):  # nested, as Lightning does
        pass
    assert isinstance(cli.trainer.profiler.profile("c"), nullcontext)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)  # a whole fit goes through it


def test_a_profiler_asked_for_is_kept_and_profiles():
    cli = build("--trainer.profiler", "simple")
    assert type(cli.trainer.profiler) is SimpleProfiler
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert any(k.startswith("[Callback]") for k in cli.trainer.profiler.recorded_durations)


def test_checkpoint_state_keys_are_lightnings_and_follow_their_settings():
    best = BestCheckpoint(monitor="val/loss", mode="min")
    assert best.state_key == ModelCheckpoint(monitor="val/loss", mode="min").state_key
    best.monitor = None  # BestCheckpoint.setup does this when the data has no validation split
    assert best.state_key == ModelCheckpoint(monitor=None, mode="min").state_key
    last = LastCheckpoint(every_n_train_steps=7)
    assert last.state_key == ModelCheckpoint.state_key.fget(last)
    assert "'every_n_train_steps': 7" in last.state_key


def test_a_deterministic_run_does_not_fill_new_tensors_first(monkeypatch):
    import torch

    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    try:
        build()  # the digits recipe: deterministic
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    finally:
        torch.use_deterministic_algorithms(False)
