"""Resuming: ``--ckpt_path last`` finds the newest last.ckpt of a recipe's runs, ``LastCheckpoint`` writes one
every N optimizer steps, and a run stopped anywhere resumes bit for bit (loader position, augmentation,
generators, callbacks). The SIGKILL tests on real ``zoo fit`` processes are in test_fault_injection.py."""

from __future__ import annotations

import csv
import itertools
import math
import os
import random
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINER
from jsonargparse import Namespace
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback
from torchvision.transforms import v2

import zoo
from callbacks import EMA, CosineDecay, LastCheckpoint, LinearWarmup, PreciseBN, StochasticDepth
from callbacks.exact_resume import ExactResume
from recipes.resume import find_last_checkpoint, resolve_last, run_folders
from zoo import ImageClassifier
from zoo.data import DigitsDataModule, SyntheticDataModule
from zoo.data.loader import next_epoch, train_loader
from zoo.data.shift import RandomShift
from zoo.data.tensor import TensorImageDataset
from zoo.runtime.checkpoint_io import AtomicCheckpointIO

SMALL = {"widths": [4], "depth": 1}


def touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def config(ckpt_path="last", dirpath=None) -> Namespace:
    logger = Namespace(
        class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir="runs", name="r")
    )
    trainer = Namespace(default_root_dir="runs/r", logger=logger)
    return Namespace(ckpt_path=ckpt_path, trainer=trainer, checkpoint=Namespace(dirpath=dirpath))


def test_last_is_the_newest_last_ckpt_of_the_recipes_runs():
    touch(Path("runs/r/version_0/checkpoints/last.ckpt"), 1000)
    newest = touch(Path("runs/r/version_1/checkpoints/last.ckpt"), 2000)
    touch(Path("runs/other/version_0/checkpoints/last.ckpt"), 3000)  # another recipe's run
    touch(Path("runs/r/version_1/checkpoints/best-epoch001.ckpt"), 4000)  # not a last checkpoint
    cfg = config()
    assert run_folders(cfg) == [Path("runs/r")]
    assert resolve_last(cfg, "fit") == newest
    assert cfg.ckpt_path == str(newest)


def test_wandb_runs_are_found_under_their_project():
    # Lightning's checkpoints of a W&B run live in save_dir/<project>/<run id>/checkpoints
    logger = Namespace(
        class_path="zoo.runtime.loggers.WandbLogger",
        init_args=Namespace(save_dir="runs", name="r", project="zoo-runs"),
    )
    cfg = Namespace(
        ckpt_path="last", trainer=Namespace(default_root_dir="runs/r", logger=logger), checkpoint=None
    )
    touch(Path("runs/other/version_0/checkpoints/last.ckpt"), 3000)  # another recipe's run
    wandb_last = touch(Path("runs/zoo-runs/abc123/checkpoints/last.ckpt"), 2000)
    assert Path("runs/zoo-runs") in run_folders(cfg)
    assert resolve_last(cfg, "fit") == wandb_last


def test_a_newer_slurm_hpc_checkpoint_wins():
    touch(Path("runs/r/version_0/checkpoints/last.ckpt"), 1000)
    hpc = touch(Path("runs/r/hpc_ckpt_2.ckpt"), 2000)  # Lightning's save on SIGUSR1, in default_root_dir
    assert find_last_checkpoint([Path("runs/r")]) == hpc


def test_checkpoint_dirpath_is_the_only_place_searched_when_set():
    touch(Path("runs/r/version_0/checkpoints/last.ckpt"), 2000)
    mine = touch(Path("elsewhere/last.ckpt"), 1000)
    cfg = config(dirpath="elsewhere")
    assert resolve_last(cfg, "fit") == mine


def test_no_checkpoint_yet_starts_fit_from_scratch_but_stops_evaluation():
    cfg = config()
    with pytest.warns(UserWarning, match=r"no last.ckpt under runs/r yet, so training starts from scratch"):
        assert resolve_last(cfg, "fit") is None
    assert cfg.ckpt_path is None
    with pytest.raises(SystemExit, match=r"--ckpt_path last: no last.ckpt under runs/r; give the checkpoint"):
        resolve_last(config(), "test")


def test_other_paths_are_left_alone():
    cfg = config(ckpt_path="my.ckpt")
    assert resolve_last(cfg, "fit") is None and cfg.ckpt_path == "my.ckpt"


def test_last_checkpoint_writes_every_n_steps_only():
    ckpts = Path("ckpts")
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=5,
        limit_val_batches=0,
        callbacks=[LastCheckpoint(every_n_train_steps=3, dirpath=str(ckpts))],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = ImageClassifier("convnet", num_classes=4, in_chans=1, model_kwargs={"widths": [4], "depth": 1})
    trainer.fit(model, SyntheticDataModule(num_classes=4, image_size=8, num_channels=1, batch_size=4))
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]
    # written at step 3, not at the end of the 5-step epoch
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 3
    with pytest.raises(ValueError, match="every_n_train_steps=-1"):
        LastCheckpoint(every_n_train_steps=-1)


STOP_AFTER_EPOCH = (
    "--trainer.callbacks+=EarlyStopping",
    "--trainer.callbacks.monitor=train/loss",
    "--trainer.callbacks.stopping_threshold=1e30",
    "--trainer.callbacks.check_on_train_epoch_end=true",
)


def test_fit_ckpt_path_last_continues_the_stopped_run(zoo_cli, tmp_path):
    run = (
        "fit",
        "--recipe",
        "digits",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--last_checkpoint.every_n_train_steps",
        "2",
    )
    quick = (
        *run,
        "--trainer.log_every_n_steps",
        "1",
        "--test_after_fit",
        "false",
        *STOP_AFTER_EPOCH,
        *FAST_TRAINER,
    )
    assert zoo_cli(*quick, "--ckpt_path", "last") == 0  # nothing to resume yet: starts from scratch
    assert zoo_cli(*quick, "--ckpt_path", "last") == 0
    runs = tmp_path / "runs" / "digits"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    with (runs / "version_1" / "metrics.csv").open() as f:
        steps = sorted({int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")})
    assert steps == [3, 4, 5]  # the second run starts at the first run's last step
    last = torch.load(runs / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["global_step"], last["epoch"]) == (6, 1)
    # one last.ckpt, written by the epoch-end and the step-wise checkpoints alike (no last-v1.ckpt)
    assert [p.name for p in (runs / "version_1" / "checkpoints").glob("last*")] == ["last.ckpt"]


class StartState(Callback):
    """What the trainer holds when training (re)starts: weights, momentum buffers, lrs, step and epoch."""

    def on_train_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.momentum = [s["momentum_buffer"].clone() for s in optimizer.state.values()]
        self.lrs = [g["lr"] for g in optimizer.param_groups]
        self.step, self.epoch = trainer.global_step, trainer.current_epoch


def test_mid_epoch_last_ckpt_restores_weights_optimizer_schedule_epoch_and_step(tmp_path):
    def run(ckpt_path=None) -> StartState:
        start = StartState()
        trainer = Trainer(
            accelerator="cpu",
            max_epochs=4,
            limit_train_batches=5,
            limit_val_batches=0,
            callbacks=[LinearWarmup(warmup=4), LastCheckpoint(every_n_train_steps=7, dirpath="ckpts"), start],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, data, ckpt_path=ckpt_path, weights_only=True)
        return start

    torch.manual_seed(0)
    options = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    model = ImageClassifier("convnet", num_classes=4, in_chans=1, model_kwargs=SMALL, optimizer=options)
    data = SyntheticDataModule(num_classes=4, image_size=8, num_channels=1, batch_size=4)
    run()
    ckpt = torch.load("ckpts/last.ckpt", weights_only=True)
    assert (ckpt["global_step"], ckpt["epoch"]) == (14, 2)  # written at step 14, in the middle of epoch 2

    torch.manual_seed(1)
    model = ImageClassifier("convnet", num_classes=4, in_chans=1, model_kwargs=SMALL, optimizer=options)
    start = run("ckpts/last.ckpt")
    assert (start.step, start.epoch) == (14, 2)
    for key, value in ckpt["state_dict"].items():
        torch.testing.assert_close(start.weights[key], value)
    saved = [s["momentum_buffer"] for s in ckpt["optimizer_states"][0]["state"].values()]
    assert len(start.momentum) == len(saved) > 0
    for got, want in zip(start.momentum, saved):
        torch.testing.assert_close(got, want)
    # the 4-epoch warmup goes on from step 14 = 2.8 epochs: lr = 0.1 × 2.8 / 4, not 0 as at a fresh start
    assert start.lrs == pytest.approx([0.07] * len(start.lrs))


# --- exact resume: the loader's place and augmentation, the generators, the callbacks -------------------------


def augmented_digits(n: int = 40, batched: bool = False) -> TensorImageDataset:
    """Real 8×8 digits with random 1-pixel shifts: every batch depends on the augmentation's draws (made image
    by image, or for a whole batch in one call)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    shift = RandomShift(1) if batched else v2.RandomCrop(8, padding=1)
    return TensorImageDataset(x, torch.tensor(digits.target[:n]), shift)


def epoch_batches(loader, epoch: int, stop: int | None = None) -> list[torch.Tensor]:
    """The images of ``loader``'s batches in ``epoch`` (Lightning calls ``set_epoch`` the same way), up to ``stop``."""
    loader.sampler.set_epoch(epoch)
    return [x for x, _ in itertools.islice(loader, stop)]  # takes no batch beyond `stop`


def assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("batched", [False, True], ids=["per image", "per batch"])
@pytest.mark.parametrize("workers", [(2, 2), (2, 0)])
def test_loader_resumes_mid_epoch_with_the_same_order_and_augmentation(monkeypatch, workers, batched):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    data = augmented_digits(batched=batched)
    assert data.batched == batched
    reference = train_loader(data, batch_size=4)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    want = [epoch_batches(reference, e) for e in range(3)]
    # the augmentation draws from per-sample seeds, not from the process's generator (the model's dropout)
    assert torch.equal(torch.get_rng_state(), before)
    assert not torch.equal(want[0][0], want[1][0])  # a new order and new shifts every epoch

    cut, resume = workers
    stopped = train_loader(data, batch_size=4, num_workers=cut)
    assert_same(epoch_batches(stopped, 0), want[0])
    assert_same(epoch_batches(stopped, 1, stop=3), want[1][:3])  # killed after 3 batches of epoch 1
    state = stopped.state_dict()
    del stopped

    monkeypatch.setenv("PL_GLOBAL_SEED", "99")  # e.g. `seed_everything: true` draws a new seed at each start
    resumed = train_loader(data, batch_size=4, num_workers=resume)
    resumed.load_state_dict(state)  # what Lightning does with the checkpoint's loader state; the seed with it
    assert_same(epoch_batches(resumed, 1), want[1][3:])
    assert_same(epoch_batches(resumed, 2), want[2])


def test_a_loader_saved_at_the_end_of_its_epoch_resumes_with_the_next_one(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    data = augmented_digits()
    want = epoch_batches(train_loader(data, batch_size=4), 1)
    finished = train_loader(data, batch_size=4)
    epoch_batches(finished, 0)
    state = finished.state_dict()

    as_saved = train_loader(data, batch_size=4)
    as_saved.load_state_dict(state)
    assert epoch_batches(as_saved, 1) == []  # restored as it was, epoch 1 would have no batches at all
    moved = train_loader(data, batch_size=4)
    moved.load_state_dict(next_epoch(state))  # what ExactResume writes into an end-of-epoch checkpoint
    assert_same(epoch_batches(moved, 1), want)


def test_class_balanced_draws_follow_the_weights_and_resume(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    targets = torch.tensor([0] * 90 + [1] * 10)
    weights = (1.0 / torch.bincount(targets).double())[targets]
    data = TensorImageDataset(torch.zeros(100, 1, 2, 2), targets)
    loader = train_loader(data, batch_size=10, weights=weights)
    drawn = torch.cat([y for e in range(20) for _, y in (loader.sampler.set_epoch(e) or loader)])
    assert abs(drawn.float().mean().item() - 0.5) < 0.05  # P(class 1) = 10 × 0.1 / (90 × 1/90 + 10 × 0.1)
    loader.sampler.set_epoch(3)
    labels = [y for _, y in loader]
    stopped = train_loader(data, batch_size=10, weights=weights)
    stopped.sampler.set_epoch(3)
    iterator = iter(stopped)
    next(iterator), next(iterator)
    resumed = train_loader(data, batch_size=10, weights=weights)
    resumed.load_state_dict(stopped.state_dict())
    resumed.sampler.set_epoch(3)
    assert [y.tolist() for _, y in resumed] == [y.tolist() for y in labels[2:]]


class Crash(Callback):
    """Stops the run with an error before optimizer step ``step``, as a kill would (the files stay as they are)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError(f"crash before step {self.step}")


@pytest.mark.parametrize("where", ["random step", "epoch start, 2 workers"])
def test_a_run_stopped_and_resumed_ends_bit_identical(monkeypatch, where):
    """Dropout, augmentation, warmup + cosine, precise BN and an EMA of the weights: the resumed run ends with the
    very weights of the run that was never stopped. At an epoch's start it resumes from the end-of-epoch
    last.ckpt, whose loader state Lightning does not restore, while loader workers prefetch at once."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    # 2 epochs of 8 steps; last.ckpt every 3 steps (or 4: at step 8, the end of epoch 0, as the only kind there)
    crash_at, workers, every = (random.Random().randint(4, 15), 0, 3) if where == "random step" else (8, 2, 4)

    def run(ckpt_dir: str, *extra, ckpt_path=None) -> dict:
        seed_everything(0)
        model = ImageClassifier(
            "convnet",
            num_classes=10,
            in_chans=1,
            model_kwargs={"widths": [8], "depth": 1},
            drop_rate=0.3,
            optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
        )
        callbacks = [
            LinearWarmup(warmup=1),
            CosineDecay(),
            PreciseBN(num_batches=2),
            EMA(decay=0.9),
            ExactResume(),
        ]
        trainer = Trainer(
            accelerator="cpu",
            max_epochs=2,
            limit_train_batches=8,
            limit_val_batches=2,
            callbacks=[*callbacks, LastCheckpoint(every_n_train_steps=every, dirpath=ckpt_dir), *extra],
            plugins=[AtomicCheckpointIO()],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        data = DigitsDataModule(batch_size=32, num_workers=workers)
        trainer.fit(model, data, ckpt_path=ckpt_path, weights_only=True)
        return {k: v.clone() for k, v in model.state_dict().items()}

    want = run("straight")
    with pytest.raises(RuntimeError, match=f"crash before step {crash_at}"):
        run("stopped", Crash(crash_at))
    saved = torch.load("stopped/last.ckpt", weights_only=True)
    assert 0 < saved["global_step"] <= crash_at
    if where != "random step":
        assert (
            saved["global_step"],
            saved["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"],
        ) == (8, 1)
    got = run("stopped", ckpt_path="stopped/last.ckpt")
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), f"{key} differs after a crash before step {crash_at}"


def test_stochastic_depth_keeps_the_ramped_rate_of_a_run_resumed_mid_epoch():
    ramped = StochasticDepth(0.5, ramp_epochs=4)
    ramped.attach(zoo.create_model("resnet20", num_classes=10))
    ramped.set_rates(ramped.p_last(epoch=1))  # epoch 1 of a 4-epoch ramp: p_L = 0.25
    resumed = StochasticDepth(0.5, ramp_epochs=4)
    resumed.attach(zoo.create_model("resnet20", num_classes=10))
    resumed.set_rates(0.5)  # what setup() leaves; no on_train_epoch_start comes before the next batch
    resumed.load_state_dict(ramped.state_dict())
    assert resumed.rates == pytest.approx(ramped.rates)
    assert resumed.rates[-1] == pytest.approx(0.25)


def test_overfit_batches_replaces_the_sampler_and_still_trains():
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        overfit_batches=2,  # Lightning swaps the training sampler for a sequential one
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = ImageClassifier("convnet", num_classes=10, in_chans=1, model_kwargs={"widths": [4], "depth": 1})
    trainer.fit(model, DigitsDataModule(batch_size=16))
    assert trainer.global_step == 4


def digits_run(train_batches: int, val_batches: int) -> tuple[str, ...]:
    """``fit --recipe digits`` limited to so many training and validation batches an epoch."""
    limits = (
        "--trainer.limit_train_batches",
        str(train_batches),
        "--trainer.limit_val_batches",
        str(val_batches),
    )
    return ("fit", "--recipe", "digits", *limits)


def lrs_logged(run: Path) -> dict[int, float]:
    """{optimizer step: the head group's lr} from a run's metrics.csv (Lightning's lr monitor)."""
    with (run / "metrics.csv").open() as f:
        return {int(r["step"]): float(r["lr-SGD/model"]) for r in csv.DictReader(f) if r.get("lr-SGD/model")}


def test_a_finished_run_continued_longer_replans_its_schedule_and_takes_the_new_lr(zoo_cli, caplog):
    quick = digits_run(4, 2)
    quick = (*quick, "--trainer.log_every_n_steps", "1", "--test_after_fit", "false", *FAST_TRAINER)
    assert zoo_cli(*quick, "--trainer.max_epochs", "2") == 0  # 8 steps: warmup over 4, cosine to 0 at 8
    last = "runs/digits/version_0/checkpoints/last.ckpt"
    assert (
        zoo_cli(*quick, "--trainer.max_epochs", "4", "--ckpt_path", last, "--model.optimizer.lr", "0.05") == 0
    )
    lrs = lrs_logged(Path("runs/digits/version_1"))
    assert sorted(lrs) == list(range(8, 16))
    for step, lr in lrs.items():  # the digits plan over 16 steps (was: 0.0 at every new step, at lr 0.1)
        want = 0.05 * min(1.0, step / 4) * 0.5 * (1 + math.cos(math.pi * step / 16))
        assert lr == pytest.approx(want, rel=1e-6), step
    assert "Resumed with the command line's optimizer settings: lr 0.1 → 0.05" in caplog.text
    assert (
        "The lr schedule is re-planned over the run's new length, 16 optimizer steps (4/epoch; the checkpoint's "
        "run had 8): at step 8 the lr is 0.5× the base lr (0× in the checkpoint's plan)"
    ) in caplog.text


def test_a_resume_with_another_optimizer_is_refused(zoo_cli, capsys):
    quick = digits_run(2, 1)
    quick = (*quick, "--test_after_fit", "false", *FAST_TRAINER)
    assert zoo_cli(*quick, "--trainer.max_epochs", "1") == 0
    last = "runs/digits/version_0/checkpoints/last.ckpt"
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        zoo_cli(*quick, "--trainer.max_epochs", "2", "--ckpt_path", "last", "--model.optimizer.name", "adam")
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --model.optimizer.name adam: {last} holds the state of a sgd optimizer, which another optimizer "
        f"cannot continue; to switch, start a new run from its weights: --model.pretrained_path {last} instead of "
        "--ckpt_path"
    )


def test_a_run_resumed_with_its_own_length_keeps_its_plan(zoo_cli, caplog):
    quick = digits_run(4, 2)
    quick = (
        *quick,
        "--trainer.log_every_n_steps",
        "1",
        "--test_after_fit",
        "false",
        "--trainer.max_epochs",
        "3",
    )
    assert zoo_cli(*quick, *STOP_AFTER_EPOCH, *FAST_TRAINER) == 0  # stopped after epoch 0 of 3
    last = "runs/digits/version_0/checkpoints/last.ckpt"
    assert zoo_cli(*quick, *FAST_TRAINER, "--ckpt_path", last) == 0
    lrs = lrs_logged(Path("runs/digits/version_1"))
    assert sorted(lrs) == list(range(4, 12))
    for step, lr in lrs.items():  # the plan of 12 steps the run started with
        assert lr == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * step / 12)), rel=1e-6), step
    assert "re-planned" not in caplog.text and "command line's optimizer settings" not in caplog.text


def schedules_resumed_longer(*schedules, old=(10, 100), new=(10, 200), step=100):
    """Each schedule as restored from a run of ``old`` (steps per epoch, total steps), then re-planned for
    ``new`` at ``step`` (what ``--trainer.max_epochs`` raised on a resume does)."""
    for s in schedules:
        s.resolve(*old)
        s.load_state_dict(s.state_dict())
        s.replan(*new, step)
    return schedules


def test_each_schedule_continued_longer_goes_on_sensibly():
    from callbacks import ExponentialDecay, InverseTimeDecay, MultiStepDecay, StepDecay

    step_decay, multi, exp, inv, warm = schedules_resumed_longer(
        StepDecay(3), MultiStepDecay([4, 8]), ExponentialDecay(0.1), InverseTimeDecay(0.5), LinearWarmup(1)
    )
    t = 12.0  # epoch 12 of the 20 the run now has: functions of t alone carry on as they were
    assert step_decay.factor(t) == pytest.approx(0.1**4) and multi.factor(t) == pytest.approx(0.01)
    assert exp.factor(t) == pytest.approx(math.exp(-1.2)) and inv.factor(t) == pytest.approx(1 / 7)
    assert warm.factor(t) == 1.0
    (cosine,) = schedules_resumed_longer(CosineDecay())
    assert cosine.factor(10) == pytest.approx(0.5) and cosine.total == 20  # was 0 at epoch 10 of 10


def test_a_cosine_of_fixed_length_that_ends_before_the_run_says_the_lr_is_0():
    with pytest.warns(UserWarning, match="so the lr is 0 for the last 5 epochs of the run"):
        CosineDecay(T=5).resolve(10, 100)


def test_a_snapshot_ensemble_continued_longer_spreads_its_remaining_cycles_or_refuses_when_done():
    from callbacks import SnapshotEnsemble

    (snapshots,) = schedules_resumed_longer(SnapshotEnsemble(cycles=5, evaluate=False), step=40)
    assert snapshots.cycle_ends() == [40, 80, 120, 160, 200]  # 2 of 5 snapshots at steps 20 and 40 before
    done = SnapshotEnsemble(cycles=2, evaluate=False)
    done.resolve(10, 100)
    done.snapshots = ["a.ckpt", "b.ckpt"]
    with pytest.raises(ValueError, match="took all its 2 snapshots, so a longer run would take none"):
        done.replan(10, 200, 100)


def test_a_run_with_no_end_is_refused_by_the_schedules_that_need_its_length(zoo_cli, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:  # was an OverflowError traceback, reported as a bug
        zoo_cli("fit", "--recipe", "digits", "--trainer.max_epochs", "-1", *FAST_TRAINER)
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: CosineDecay spreads its curve over the run's length, but the run has no end (trainer.max_epochs -1 "
        "and trainer.max_steps -1): give --trainer.max_epochs N or --trainer.max_steps N"
    )
    assert not list(Path("runs/digits").glob("version_*"))  # no empty run folder is left
