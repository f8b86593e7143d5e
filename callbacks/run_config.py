"""Save the fully resolved recipe config with the run, the command that started it, and make the config the W&B
run's config.

Lightning's ``SaveConfigCallback`` writes ``config.yaml`` to the log dir; this adds ``command.txt`` beside it (the
``zoo`` command as a shell line: what a model card quotes, :mod:`zoo.tools.model_card`) and the same resolved
config (every default and override filled in) to each W&B run, so a run on the W&B page can be filtered by any
recipe key (``trainer.max_epochs``, ``model.optimizer.lr``, ...) and re-run from it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from zoo.runtime.loggers import run_dir

COMMAND = "command.txt"


class RunConfig(SaveConfigCallback):
    """``config.yaml`` in the log dir (Lightning's) and ``command.txt`` (``zoo`` and the arguments, as the CLI
    expanded them: ``--recipe NAME`` reads ``--config .../NAME.yaml``), plus, for W&B: the config as the run's
    config and a copy of both in the run's own directory (``<save_dir>/<project>/<run id>/``)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        # read on every process: ``trainer.log_dir`` is a collective (a broadcast), and save_config runs on rank 0 only
        self.log_dir = trainer.log_dir if self.save_to_log_dir and not self.already_saved else None
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        given = len(sys.argv) > 2  # a command, not a tuning trial (whose options come from a file)
        command = shlex.join(["zoo", *sys.argv[1:]]) + "\n" if given else None
        if command and self.log_dir:
            Path(self.log_dir, COMMAND).write_text(command)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        text = self.parser.dump(self.config, skip_none=False)
        for logger in loggers:
            logger.log_hyperparams(yaml.safe_load(text))
        out = run_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        (out / self.config_filename).write_text(text)
        if command:
            (out / COMMAND).write_text(command)
