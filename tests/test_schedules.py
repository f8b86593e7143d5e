"""LR schedule callbacks: closed-form values at every step of real runs, torch/timm peers, groups, resume."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import (
    ConstantWarmup,
    CosineDecay,
    ExponentialDecay,
    InverseTimeDecay,
    LinearWarmup,
    LRMonitor,
    MultiStepDecay,
    SnapshotEnsemble,
    StepDecay,
)
from callbacks.lr_schedule import simulate

STEPS_PER_EPOCH = 10  # 40 samples, batch 4
BASE = {"body": 0.01, "head": 0.1}  # the body at 0.1× the head


class TwoGroups(LightningModule):
    """A small regression net whose optimizer has two named groups, the body at 0.1× the head's lr."""

    def __init__(self):
        super().__init__()
        self.body, self.head, self.extra = nn.Linear(4, 3), nn.Linear(3, 1), nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.head(self.body(x)) - y) ** 2).mean()

    def configure_optimizers(self):
        groups = [{"params": getattr(self, n).parameters(), "lr": lr, "name": n} for n, lr in BASE.items()]
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(40, 4, generator=g), torch.randn(40, 1, generator=g))
        return DataLoader(data, batch_size=4)


class RecordLR(Callback):
    """The lr of every group as the optimizer steps with it: {step: {group name: lr}}."""

    def __init__(self):
        self.lrs: dict[int, dict[str, float]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs[trainer.global_step] = {g["name"]: g["lr"] for g in optimizer.param_groups}


def fit(schedules, max_epochs=3, extra=(), **trainer_kwargs) -> RecordLR:
    record = RecordLR()
    ckpt_path = trainer_kwargs.pop("ckpt_path", None)
    trainer = Trainer(
        max_epochs=max_epochs,
        callbacks=[*schedules, *extra, record],
        logger=trainer_kwargs.pop("logger", False),
        enable_checkpointing=trainer_kwargs.pop("enable_checkpointing", False),
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(TwoGroups(), ckpt_path=ckpt_path)
    return record


def close(a: float, b: float, rel: float = 1e-12) -> bool:
    return a == pytest.approx(b, rel=rel, abs=0)


# closed-form factors of the notes, in epochs e (fractional: e = step / steps per epoch); run of 3 epochs
CASES = {
    "warmup1+cosine": (
        lambda: [LinearWarmup(1), CosineDecay()],
        lambda e: min(1.0, e / 1) * 0.5 * (1 + math.cos(math.pi * e / 3)),
    ),
    "warmup0.5(from 0.1)+cosine floor 0.2": (
        lambda: [LinearWarmup(0.5, start_factor=0.1), CosineDecay(floor=0.2)],
        lambda e: (0.1 + 0.9 * min(1.0, e / 0.5)) * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * e / 3))),
    ),
    "constant warmup 0.5 at 0.1, then cosine": (
        lambda: [ConstantWarmup(0.5, start_factor=0.1), CosineDecay()],
        lambda e: (0.1 if e < 0.5 else 1.0) * 0.5 * (1 + math.cos(math.pi * e / 3)),
    ),
    "step ×0.1 every epoch": (lambda: [StepDecay(1, gamma=0.1)], lambda e: 0.1 ** math.floor(e)),
    "multi-step [1.5, 2.5] ×0.5": (
        lambda: [MultiStepDecay([1.5, 2.5], gamma=0.5)],
        lambda e: 0.5 ** ((e >= 1.5) + (e >= 2.5)),
    ),
    "exponential k=0.7": (lambda: [ExponentialDecay(0.7)], lambda e: math.exp(-0.7 * e)),
    "1/t k=2": (lambda: [InverseTimeDecay(2.0)], lambda e: 1 / (1 + 2.0 * e)),
    "warmup 5 steps + cosine after it": (
        lambda: [LinearWarmup(5, unit="step"), CosineDecay(unit="step", start=5)],
        lambda e: min(1.0, e * 10 / 5) * 0.5 * (1 + math.cos(math.pi * max(0.0, e * 10 - 5) / 25)),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lr_at_every_step_equals_the_closed_form(case):
    make, formula = CASES[case]
    lrs = fit(make()).lrs
    assert sorted(lrs) == list(range(3 * STEPS_PER_EPOCH))
    for step, by_group in lrs.items():
        for name, base in BASE.items():
            assert close(by_group[name], base * formula(step / STEPS_PER_EPOCH)), (case, step, name)


def test_two_groups_keep_their_ratio_through_warmup_and_decay():
    lrs = fit([LinearWarmup(1, start_factor=0.05), CosineDecay(floor=0.01), StepDecay(2)]).lrs
    ratios = [g["body"] / g["head"] for g in lrs.values()]
    assert len(ratios) == 30 and all(r == pytest.approx(0.1, rel=1e-12) for r in ratios)
    heads = [lrs[s]["head"] for s in sorted(lrs)]
    assert max(heads) > 5 * heads[0] and heads[-1] < 0.1 * max(heads)  # it did warm up and decay


def test_the_order_of_the_schedules_does_not_change_the_lr():
    """Whichever schedule comes first in trainer.callbacks writes the product of all of them."""
    forward = fit([LinearWarmup(1), CosineDecay(floor=0.1), StepDecay(2)]).lrs
    backward = fit([StepDecay(2), CosineDecay(floor=0.1), LinearWarmup(1)]).lrs
    assert forward.keys() == backward.keys()
    assert all(forward[s] == pytest.approx(backward[s], rel=1e-12) for s in forward)


SHARED = {"unit": "step", "interval": "epoch", "start": 2, "groups": ["head"]}


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: StepDecay(30, **kw),
        lambda **kw: MultiStepDecay([5, 9], **kw),
        lambda **kw: ExponentialDecay(0.1, **kw),
        lambda **kw: InverseTimeDecay(0.1, **kw),
        lambda **kw: CosineDecay(**kw),
        lambda **kw: LinearWarmup(3, **kw),
        lambda **kw: SnapshotEnsemble(3, **kw),
    ],
)
def test_every_schedule_takes_the_shared_options_by_name(make):
    schedule = make(**SHARED)
    assert (schedule.unit, schedule.interval, schedule.start, schedule.groups) == (
        "step",
        "epoch",
        2.0,
        ["head"],
    )
    with pytest.raises(TypeError):
        make(unit_typo="step")


def test_checkpoint_keys_of_the_schedules_are_those_older_checkpoints_hold():
    """A resumed run finds each schedule's state under the key it was saved with."""
    shared = "'unit': 'epoch', 'interval': 'step', 'groups': None"
    assert StepDecay(30).state_key == f"StepDecay{{{shared}, 'step_size': 30.0, 'gamma': 0.1}}"
    assert (
        MultiStepDecay([5, 9]).state_key
        == f"MultiStepDecay{{{shared}, 'milestones': [5.0, 9.0], 'gamma': 0.1}}"
    )
    assert ExponentialDecay(0.5).state_key == f"ExponentialDecay{{{shared}, 'k': 0.5}}"
    assert InverseTimeDecay(0.5).state_key == f"InverseTimeDecay{{{shared}, 'k': 0.5}}"
    assert CosineDecay().state_key == f"CosineDecay{{{shared}, 'T': None, 'floor': 0.0}}"
    assert LinearWarmup(5).state_key == f"LinearWarmup{{{shared}, 'warmup': 5.0, 'start_factor': 0.0}}"
    assert ConstantWarmup(5).state_key == f"ConstantWarmup{{{shared}, 'warmup': 5.0, 'start_factor': 0.1}}"
    assert SnapshotEnsemble(3, last=2).state_key == f"SnapshotEnsemble{{{shared}, 'cycles': 3}}"


def test_interval_epoch_updates_once_per_epoch():
    lrs = fit([CosineDecay(interval="epoch")]).lrs
    for step, g in lrs.items():
        epoch = step // STEPS_PER_EPOCH
        assert close(g["head"], 0.1 * 0.5 * (1 + math.cos(math.pi * epoch / 3)))


class AddGroup(Callback):
    """Fine-tuning in miniature: at epoch 1 add a group (lr 0.05) and warm only it up from there."""

    def __init__(self, warmup: LinearWarmup):
        self.warmup = warmup

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            trainer.optimizers[0].add_param_group(
                {"params": pl_module.extra.parameters(), "lr": 0.05, "name": "extra"}
            )
            self.warmup.restart(trainer, groups=["extra"])


def test_group_added_mid_run_takes_its_lr_as_base_and_gets_its_own_warmup():
    late_warmup = LinearWarmup(4, unit="step", groups=["extra"])
    lrs = fit([CosineDecay(), late_warmup], extra=[AddGroup(late_warmup)]).lrs
    cos = lambda s: 0.5 * (1 + math.cos(math.pi * s / 30))  # noqa: E731
    for step, g in lrs.items():
        assert close(g["head"], 0.1 * cos(step))  # the restarted warmup leaves the other groups alone
        if step < 10:
            assert "extra" not in g
        else:
            assert close(g["extra"], 0.05 * min(1.0, (step - 10) / 4) * cos(step)), step


class Crash(RuntimeError):
    pass


class StopAt(Callback):
    """Crash the run when it reaches ``step`` (after the checkpoint of an earlier step was written)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Crash(f"stopped at step {self.step}")


class RestartAt(Callback):
    """Restart a schedule at ``step`` (its new start is state that only the checkpoint carries)."""

    def __init__(self, schedule, step: int):
        self.schedule, self.step = schedule, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.schedule.restart(trainer)


def _schedules():
    warmup = LinearWarmup(6, unit="step")
    return [warmup, CosineDecay(floor=0.1), StepDecay(2, gamma=0.5)], warmup


def test_resumed_mid_epoch_run_continues_the_identical_lr_sequence(tmp_path):
    schedules, warmup = _schedules()
    full = fit(schedules, extra=[RestartAt(warmup, 3)]).lrs

    schedules, warmup = _schedules()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=7, save_top_k=-1)
    with pytest.raises(Crash):
        fit(schedules, extra=[RestartAt(warmup, 3), ckpt, StopAt(12)], enable_checkpointing=True)
    saved = tmp_path / "ckpt" / "epoch=0-step=7.ckpt"
    assert saved.is_file() and torch.load(saved, weights_only=True)["global_step"] == 7

    schedules, _ = _schedules()  # fresh callbacks: the restart at step 3 is known only to the checkpoint
    resumed = fit(schedules, ckpt_path=str(saved)).lrs
    assert sorted(resumed) == list(range(7, 30))
    assert all(resumed[s] == full[s] for s in resumed)  # bit-identical
    assert full[3]["head"] == 0.0 and full[2]["head"] > 0  # the restart did change the curve


def test_schedule_state_is_in_the_checkpoint(tmp_path):
    schedules, warmup = _schedules()
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1)
    fit(schedules, max_epochs=1, extra=[RestartAt(warmup, 2), ckpt], enable_checkpointing=True)
    state = torch.load(tmp_path / "epoch=0-step=5.ckpt", weights_only=True)["callbacks"][warmup.state_key]
    assert state == {"start": 2.0, "groups": None, "steps_per_epoch": 10, "total_steps": 10}


# --- peers: torch.optim.lr_scheduler and timm.scheduler, same curve ---------------------------------


def _opt(lr=0.1):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def _ours(schedules, steps_per_epoch=STEPS_PER_EPOCH, epochs=12):
    return [g[0] for g in simulate(schedules, _opt(), steps_per_epoch, steps_per_epoch * epochs)]


def _torch_per_epoch(make, epochs=12):
    opt = _opt()
    sched, out = make(opt), []
    for _ in range(epochs):
        out += [opt.param_groups[0]["lr"]] * STEPS_PER_EPOCH
        sched.step()
    return out


def _torch_per_step(make, steps):
    opt = _opt()
    sched, out = make(opt), []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        sched.step()
    return out


def _same(ours, theirs, rel=1e-10):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == pytest.approx(b, rel=rel, abs=1e-15), i


def test_step_decay_matches_torch_steplr():
    lr_scheduler = torch.optim.lr_scheduler
    _same(
        _ours([StepDecay(3, gamma=0.5, interval="epoch")]),
        _torch_per_epoch(lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    )


def test_multistep_decay_matches_torch_multisteplr():
    lr_scheduler = torch.optim.lr_scheduler
    _same(
        _ours([MultiStepDecay([5, 8, 10], gamma=0.1, interval="epoch")]),
        _torch_per_epoch(lambda o: lr_scheduler.MultiStepLR(o, milestones=[5, 8, 10], gamma=0.1)),
    )


def test_exponential_decay_matches_torch_exponentiallr():
    lr_scheduler = torch.optim.lr_scheduler
    _same(
        _ours([ExponentialDecay(0.3, interval="epoch")]),
        _torch_per_epoch(lambda o: lr_scheduler.ExponentialLR(o, gamma=math.exp(-0.3))),
    )


def test_cosine_decay_matches_torch_cosineannealinglr_per_step():
    lr_scheduler = torch.optim.lr_scheduler
    steps = 12 * STEPS_PER_EPOCH
    _same(
        _ours([CosineDecay(floor=0.05)]),
        _torch_per_step(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=steps, eta_min=0.1 * 0.05), steps),
    )


def test_linear_warmup_matches_torch_linearlr():
    lr_scheduler = torch.optim.lr_scheduler
    steps = 12 * STEPS_PER_EPOCH
    _same(
        _ours([LinearWarmup(25, unit="step", start_factor=0.2)]),
        _torch_per_step(lambda o: lr_scheduler.LinearLR(o, start_factor=0.2, total_iters=25), steps),
    )


def test_warmup_then_cosine_matches_timm_cosinelrscheduler():
    from timm.scheduler import CosineLRScheduler

    steps, warm = 12 * STEPS_PER_EPOCH, 15
    opt = _opt()
    timm_sched = CosineLRScheduler(
        opt,
        t_initial=steps - warm,
        lr_min=0.1 * 0.02,
        warmup_t=warm,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    theirs = []
    for step in range(steps):
        timm_sched.step_update(step)
        theirs.append(opt.param_groups[0]["lr"])
    ours = _ours([LinearWarmup(warm, unit="step"), CosineDecay(unit="step", start=warm, floor=0.02)])
    _same(ours, theirs)


def test_step_and_multistep_match_timm():
    from timm.scheduler import MultiStepLRScheduler, StepLRScheduler

    for make_timm, ours in (
        (lambda o: StepLRScheduler(o, decay_t=4, decay_rate=0.3), StepDecay(4, gamma=0.3, interval="epoch")),
        (  # timm's convention: its milestone m applies from epoch m − 1 (timm/scheduler/multistep_lr.py)
            lambda o: MultiStepLRScheduler(o, decay_t=[3, 7], decay_rate=0.1),
            MultiStepDecay([2, 6], interval="epoch"),
        ),
    ):
        opt, theirs = _opt(), []
        sched = make_timm(opt)
        for epoch in range(12):
            sched.step(epoch)
            theirs += [opt.param_groups[0]["lr"]] * STEPS_PER_EPOCH
        _same(_ours([ours]), theirs)


# --- logging and errors ------------------------------------------------------------------------------


def test_lr_and_momentum_of_each_group_are_logged(tmp_path):
    import csv

    logger = CSVLogger(tmp_path, name="lr")
    lrs = fit([LinearWarmup(1), CosineDecay()], extra=[LRMonitor()], logger=logger, log_every_n_steps=1).lrs
    with open(logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-SGD/head")]
    assert len(rows) == 30
    for row in rows:
        step = int(row["step"])
        assert float(row["lr-SGD/head"]) == pytest.approx(lrs[step]["head"], rel=1e-6, abs=1e-12)
        assert float(row["lr-SGD/body"]) == pytest.approx(lrs[step]["body"], rel=1e-6, abs=1e-12)
        assert float(row["lr-SGD/head-momentum"]) == 0.9


def test_lr_monitor_without_a_logger_is_quiet():
    assert len(fit([CosineDecay()], extra=[LRMonitor()], max_epochs=1).lrs) == 10


def test_warmup_longer_than_the_run_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"warmup=5 epochs .* longer than the whole run \(3 epochs"):
        fit([LinearWarmup(5)])
    with pytest.raises(ValueError, match=r"warmup=31 steps"):
        fit([LinearWarmup(31, unit="step")])
    with pytest.raises(ValueError, match=r"ConstantWarmup: warmup=31 steps .* longer than the whole run"):
        fit([ConstantWarmup(31, unit="step")])


def test_constant_warmup_is_he_et_al_resnet110_rule_in_iterations():
    """lr 0.01 for the first 400 iterations, then 0.1, ×0.1 at 32k and 48k, 64k in all (He et al. 2016, 4.2)."""
    schedules = [ConstantWarmup(400, unit="step"), MultiStepDecay([32_000, 48_000], unit="step")]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    lrs = [row[0] for row in simulate(schedules, opt, 351, 64_000)]
    rule = [0.1 * (0.1 if k < 400 else 1) * 0.1 ** ((k >= 32_000) + (k >= 48_000)) for k in range(64_000)]
    assert len(lrs) == 64_000 and all(close(a, b) for a, b in zip(lrs, rule))
    assert (lrs[399], lrs[400], lrs[31_999], lrs[32_000], lrs[48_000]) == pytest.approx(
        (0.01, 0.1, 0.1, 0.01, 1e-3)
    )


class NegativeLR(TwoGroups):
    def configure_optimizers(self):
        return torch.optim.SGD([{"params": self.parameters(), "lr": -0.1, "name": "all"}], lr=0.1)


def test_negative_lr_is_an_error_naming_the_group():
    trainer = Trainer(max_epochs=1, callbacks=[CosineDecay()], logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=r"param group 'all' has lr -0.1"):
        trainer.fit(NegativeLR())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LinearWarmup(-2), r"warmup=-2"),
        (lambda: LinearWarmup(2, start_factor=1.5), r"start_factor=1.5"),
        (lambda: ConstantWarmup(0), r"ConstantWarmup: warmup=0"),
        (lambda: ConstantWarmup(2, start_factor=-0.1), r"ConstantWarmup: start_factor=-0.1"),
        (lambda: StepDecay(30, gamma=-0.1), r"gamma=-0.1"),
        (lambda: MultiStepDecay([60, 30]), r"milestones=\[60, 30\]"),
        (lambda: CosineDecay(floor=-0.1), r"floor=-0.1"),
        (lambda: ExponentialDecay(float("nan")), r"k=nan"),
        (lambda: CosineDecay(unit="iteration"), r"unit='iteration'"),
    ],
)
def test_bad_schedule_arguments_are_errors_naming_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()
