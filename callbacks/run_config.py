"""Save the fully resolved recipe config with the run, and make it the W&B run's config.

Lightning's ``SaveConfigCallback`` writes ``config.yaml`` to the log dir; this adds the same resolved
config (every default and override filled in) to each W&B run, so a run on the W&B page can be
filtered by any recipe key (``trainer.max_epochs``, ``model.optimizer.lr``, ...) and re-run from it.
"""

from __future__ import annotations

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from zoo.loggers import run_dir


class RunConfig(SaveConfigCallback):
    """``config.yaml`` in the log dir (Lightning's), plus, for W&B: the config as the run's config and a
    copy in the run's own directory (``<save_dir>/<project>/<run id>/config.yaml``)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        text = self.parser.dump(self.config, skip_none=False)
        for logger in loggers:
            logger.log_hyperparams(yaml.safe_load(text))
        out = run_dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        (out / self.config_filename).write_text(text)
