"""``zoo tune``'s search: Optuna over a recipe's options, coarse to fine, each trial a ``zoo fit`` scored on validation.

The notes' practice: short runs over wide log-scaled ranges first (the *coarse* stage), then longer runs in a range
narrowed around the best of them (the *fine* stage), hopeless runs stopped early, every choice made on the
validation split and the test split never touched. Optuna does the searching: its TPE sampler proposes values, its
median pruner stops a trial whose validation score after an epoch is worse than the median of the earlier trials'
at that epoch, and its storage (SQLite, or any database Optuna takes) holds both stages' studies, so a search
resumes where it stopped and several workers can share one search. The two stages are two studies,
``NAME.coarse`` and ``NAME.fine``; ``trials`` is the total of both (``fine_trials`` of them fine), counted over
every worker, so re-running the same command continues the count.
"""

from __future__ import annotations

import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recipes.trial import fit_trial, into_folder, score, trial_config
from zoo.errors import ZooError
from zoo.tools.search_space import Param, from_dicts, param_dict

HEARTBEAT_S, GRACE_S = 30, 120  # a trial whose worker stopped beating this long ago counts as failed
FAILURES_IN_A_ROW = 3  # a search whose trials keep failing stops and says why


@dataclass
class TuneSettings:
    """What to search and for how long; a recipe's ``tune:`` section or ``zoo tune``'s options set these.

    Args:
        trials: trials of the whole search, both stages and every worker together.
        fine_trials: how many of them are fine (default: a third).
        timeout: seconds after which this worker starts no new trial (None: no limit).
        coarse_epochs: ``trainer.max_epochs`` of a coarse trial (default: a quarter of the recipe's).
        fine_epochs: of a fine trial (default: the recipe's own).
        metric: the validation metric scored (default: the recipe's ``checkpoint.monitor``).
        mode: ``min`` or ``max`` (default: the recipe's ``checkpoint.mode``).
        startup_trials: trials of a stage that run to the end before the median pruner stops any.
        space: ``{KEY: "LOW:HIGH[:log][:int]"}`` (see :mod:`zoo.tools.search_space`); None: lr, weight decay, dropout
            and warmup around the recipe's values.
    """

    trials: int = 20
    fine_trials: int | None = None
    timeout: float | None = None
    coarse_epochs: int | None = None
    fine_epochs: int | None = None
    metric: str | None = None
    mode: str | None = None
    startup_trials: int = 5
    space: dict[str, Any] | None = None

    @classmethod
    def from_section(cls, section: dict | None) -> TuneSettings:
        """From a recipe's ``tune:`` mapping; an unknown key is an error naming it."""
        section = dict(section or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ZooError(
                f"tune.{unknown[0]}: not a setting of zoo tune; the settings: {', '.join(sorted(known))}"
            )
        return cls(**section)

    def check(self) -> None:
        if self.trials < 1:
            raise ZooError(f"--trials {self.trials}: run at least 1 trial")
        if self.fine_trials is not None and not 0 <= self.fine_trials <= self.trials:
            raise ZooError(f"--fine_trials {self.fine_trials}: between 0 and --trials ({self.trials})")
        for name in ("coarse_epochs", "fine_epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ZooError(f"--{name} {value}: at least 1 epoch")
        if self.mode not in (None, "min", "max"):
            raise ZooError(f"--mode {self.mode!r}: min or max")
        if self.timeout is not None and self.timeout <= 0:
            raise ZooError(f"--timeout {self.timeout:g}: a number of seconds > 0")


@dataclass
class Stage:
    """One stage of the search: its study, how many trials it wants, how long each runs, and its space."""

    name: str  # coarse | fine
    trials: int
    epochs: int | None  # trainer.max_epochs of its trials (None: the recipe's)
    space: list[Param] = field(default_factory=list)


# --- storage and studies ------------------------------------------------------------------------------------------


def storage_for(where: str):
    """An Optuna storage: a database URL (``sqlite:///path.db``, ``postgresql://...``), a ``.log`` file (Optuna's
    journal file, for a file system shared by nodes without a database), or a path taken as SQLite."""
    import optuna

    if where.endswith(".log") and "://" not in where:
        from optuna.storages.journal import JournalFileBackend

        Path(where).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(where))
    url = where if "://" in where else f"sqlite:///{Path(where).resolve()}"
    engine = None
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # workers wait for each other's writes
    for attempt in range(3):  # two workers creating a new database's tables at once: one retries
        try:
            with warnings.catch_warnings():  # Optuna calls its heartbeat experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
        except Exception:  # noqa: BLE001 - sqlalchemy's OperationalError; raised as it is after 3 tries
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def open_study(storage, name: str, mode: str, startup_trials: int, seed: int | None):
    import optuna

    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction="minimize" if mode == "min" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=1),
        load_if_exists=True,
    )


def counted(study) -> int:
    """Trials that count towards a stage's number: finished, pruned, or running in some worker (not failed ones,
    nor ones queued with ``study.enqueue_trial``, which the next trials run)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return len(study.get_trials(deepcopy=False, states=states))


def best_trial(study):
    """The best complete trial of ``study``, or None."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    pick = min if study.direction.name == "MINIMIZE" else max
    return pick(done, key=lambda t: t.value)


# --- the search ---------------------------------------------------------------------------------------------------


class Search:
    """Run the stages of a search over ``base`` (a recipe's full config) into ``out``; see the module's doc."""

    def __init__(
        self,
        base: dict,
        settings: TuneSettings,
        space: list[Param],
        out: Path,
        study: str,
        storage: str,
        metric: str,
        mode: str,
        seed: int | None = None,
        keep_checkpoints: bool = False,
        say=print,
    ):
        self.base, self.settings, self.space, self.out = base, settings, space, out
        self.name, self.metric, self.mode, self.seed = study, metric, mode, seed
        self.keep_checkpoints, self.say = keep_checkpoints, say
        self.storage = storage_for(storage)
        fine = settings.trials // 3 if settings.fine_trials is None else settings.fine_trials
        self.stages = [
            Stage("coarse", settings.trials - fine, settings.coarse_epochs, space),
            Stage("fine", fine, settings.fine_epochs),
        ]
        self.studies = {
            s.name: open_study(self.storage, f"{study}.{s.name}", mode, settings.startup_trials, seed)
            for s in self.stages
        }
        self.deadline = time.monotonic() + settings.timeout if settings.timeout else math.inf
        self.stopped_by_time = False

    def run(self) -> None:
        for stage in self.stages:
            if stage.trials == 0:
                continue
            if stage.name == "fine":
                stage.space = self.fine_space()
                if stage.space is None:
                    return
            self.run_stage(stage)
            if self.stopped_by_time:
                return

    def run_stage(self, stage: Stage) -> None:
        study = self.studies[stage.name]
        failures = 0
        while counted(study) < stage.trials:
            if time.monotonic() >= self.deadline:
                self.stopped_by_time = True
                self.say(f"time budget spent: no new trial (the {stage.name} stage has {counted(study)})")
                return
            errors: list[BaseException] = []

            def objective(trial, stage=stage, errors=errors):
                try:
                    return self.run_trial(trial, stage)
                except (ZooError, ValueError, OSError) as err:
                    errors.append(err)
                    raise

            study.optimize(objective, n_trials=1, catch=(ZooError, ValueError, OSError))
            last = study.get_trials(deepcopy=False)[-1] if errors else None
            if errors:
                failures += 1
                self.say(f"  {stage.name} #{last.number}: failed: {str(errors[0]).splitlines()[0]}")
                if failures >= FAILURES_IN_A_ROW:
                    raise ZooError(f"{failures} trials in a row failed; the last: {errors[0]}") from errors[0]
            else:
                failures = 0

    def run_trial(self, trial, stage: Stage) -> float:
        import optuna

        started = time.monotonic()
        values = {p.key: p.suggest(trial) for p in stage.space}
        folder = self.out / "trials" / f"{stage.name}_{trial.number:03d}"  # its logs (and checkpoints)
        config = trial_config(self.base, values, stage.epochs)
        path = folder.with_suffix(".yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(into_folder(config, folder, self.name), sort_keys=False))
        trial.set_user_attr("max_epochs", config.get("trainer", {}).get("max_epochs"))
        try:
            report = fit_trial(path, trial, self.metric)
        finally:
            if not self.keep_checkpoints:
                shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        seconds = time.monotonic() - started
        trial.set_user_attr("seconds", round(seconds, 1))
        trial.set_user_attr("epochs_run", len(report.epochs))
        value, epoch, metrics = score(report, self.metric, self.mode)
        trial.set_user_attr("best_epoch", epoch)
        trial.set_user_attr("val", metrics)
        shown = "  ".join(f"{p.name} {values[p.key]:.3g}" for p in stage.space)
        if report.pruned_at is not None:
            trial.set_user_attr("pruned_at", report.pruned_at)
            self.say(
                f"  {stage.name} #{trial.number}: pruned after epoch {report.pruned_at} ({shown}; {seconds:.0f} s)"
            )
            raise optuna.TrialPruned()
        self.say(
            f"  {stage.name} #{trial.number}: {self.metric} {value:.4g} at epoch {epoch}  {shown}  ({seconds:.0f} s)"
        )
        return value

    def fine_space(self) -> list[Param] | None:
        """The coarse range narrowed around the best coarse trial; fixed once, in the fine study, for every worker."""
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        fine = self.studies["fine"]
        if "space" in fine.user_attrs:
            return from_dicts(fine.user_attrs["space"])
        coarse = self.studies["coarse"]
        while coarse.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # other workers' coarse trials
            if time.monotonic() >= self.deadline:
                self.stopped_by_time = True
                return None
            fail_stale_trials(coarse)
            time.sleep(5)
        best = best_trial(coarse)
        if best is None:
            self.say("no coarse trial finished: the fine stage searches the coarse range")
            space = list(self.space)
        else:
            space = [p.narrowed(best.params[p.key]) if p.key in best.params else p for p in self.space]
            ranges = ", ".join(f"{p.name} {p.spec(3)}" for p in space)
            self.say(f"fine stage: around coarse #{best.number} ({self.metric} {best.value:.4g}): {ranges}")
        fine.set_user_attr("space", param_dict(space))
        fine.set_user_attr("centre", best.number if best is not None else None)
        return space

    # --- what came out ------------------------------------------------------------------------------------------
    def trials(self) -> list[tuple[str, Any]]:
        """(stage, trial) of both stages, unfinished trials left out."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED)
        return [(name, t) for name, study in self.studies.items() for t in study.get_trials(states=states)]

    def winner(self) -> tuple[str, Any] | None:
        """The best complete fine trial, else the best complete coarse trial."""
        for name in ("fine", "coarse"):
            best = best_trial(self.studies[name])
            if best is not None:
                return name, best
        return None

    def winning_config(self) -> tuple[dict, str, Any] | None:
        """The winner's recipe as ``zoo fit --config`` runs it (the recipe's own logging and test), and its trial."""
        found = self.winner()
        if found is None:
            return None
        stage, trial = found
        return trial_config(self.base, trial.params, trial.user_attrs.get("max_epochs")), stage, trial
