"""Where a ``zoo fit`` run's time goes, by phase: the set-up (from the callbacks' creation: listing the data, the
label check's feature pass), the fit's start (the linear probe's feature pass and fit), the sanity check,
training, validation, the end of fit (report, plots) and the final test.

Added to a run by the benchmarks as ``--trainer.callbacks+=phase_clock.PhaseClock --trainer.callbacks.path FILE``
with ``benchmarks/`` on PYTHONPATH; writes FILE (JSON, seconds per phase) at the end of the test, or of the fit
when there is no test. Callbacks given in a recipe run before the zoo's own, so its ``on_fit_start`` starts the
clock before the probe.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PhaseClock(Callback):
    """Seconds spent in each phase of ``fit`` and ``test``, written as JSON to ``path``: each hook closes the
    phase in progress and opens the next."""

    PHASES = ("setup", "fit_start", "sanity", "training", "validation", "fit_end", "test")

    def __init__(self, path: str):
        self.path = Path(path)
        self.seconds = dict.fromkeys((*self.PHASES, "done"), 0.0)
        self._phase, self._mark = "setup", time.perf_counter()

    def _to(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[self._phase] += now - self._mark
        self._phase, self._mark = phase, now

    def on_fit_start(self, trainer, pl_module) -> None:
        self._to("fit_start")

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._to("sanity")

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        self._to("training")

    def on_train_start(self, trainer, pl_module) -> None:
        self._to("training")

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._to("validation")

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._to("training")

    def on_train_end(self, trainer, pl_module) -> None:
        self._to("fit_end")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._to("fit_end")  # the zoo's own end-of-fit work (report, plots) runs after this hook
        self._write()

    def on_test_start(self, trainer, pl_module) -> None:
        self._to("test")

    def on_test_end(self, trainer, pl_module) -> None:
        self._to("done")
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        seconds = {k: round(v, 2) for k, v in self.seconds.items() if k in self.PHASES}
        self.path.write_text(json.dumps(seconds) + "\n")
