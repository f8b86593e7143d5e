"""Costs the recipes' trainer avoids: a profiler entered at every hook when none is asked for, calls of the
callbacks' empty per-batch hooks, the checkpoint callbacks' state keys (read at every hook) built at each read,
and a deterministic run filling new tensors."""

from contextlib import nullcontext

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.profilers import SimpleProfiler

from callbacks.best_checkpoint import BestCheckpoint
from callbacks.last_checkpoint import LastCheckpoint
from zoo.runtime.profiler import NoProfiler

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


def test_only_the_batch_hooks_a_callback_fills_are_called():
    from lightning.pytorch.callbacks import Callback

    from zoo.compat import BATCH_HOOKS, skip_empty_hooks

    class Counts(Callback):
        def on_train_batch_end(self, *args):
            pass

    counts = Counts()
    assert skip_empty_hooks([counts]) == 5  # of the six hooks of a training step
    assert counts.on_train_batch_start is None and callable(counts.on_train_batch_end)
    assert callable(counts.on_fit_start)  # hooks outside the batch loop are left alone
    cli = build()
    for callback in cli.trainer.callbacks:
        for name in BATCH_HOOKS:
            filled = getattr(type(callback), name) is not getattr(Callback, name)
            assert callable(getattr(callback, name)) == filled, (type(callback).__name__, name)
    called = {name: [c for c in cli.trainer.callbacks if getattr(c, name)] for name in BATCH_HOOKS[:6]}
    assert called["on_before_backward"] == called["on_after_backward"] == called["on_before_zero_grad"] == []
    assert len(called["on_train_batch_start"]) < len(cli.trainer.callbacks) / 2


def test_a_run_without_the_empty_hooks_is_the_same_run():
    import torch

    from zoo.compat import BATCH_HOOKS

    def fit(skip: bool):
        cli = build("--trainer.limit_train_batches", "4", "--trainer.max_epochs", "2")
        if not skip:
            for callback in cli.trainer.callbacks:
                for name in BATCH_HOOKS:
                    callback.__dict__.pop(name, None)  # the class's own (empty) method again
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        lrs = [g["lr"] for g in cli.trainer.optimizers[0].param_groups]
        return cli.model.state_dict(), lrs, float(cli.trainer.callback_metrics["val/loss"])

    (skipped, lrs, loss), (called, lrs_called, loss_called) = fit(True), fit(False)
    assert lrs == lrs_called and loss == loss_called
    assert skipped.keys() == called.keys()
    assert all(torch.equal(skipped[k], called[k]) for k in skipped)
