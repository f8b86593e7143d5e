"""Import timm once with ``wandb`` hidden, so that only runs that log to W&B import it.

``timm.utils.summary`` does ``try: import wandb`` at import time (0.3 s, and a W&B import in every run
that never uses it). Hiding the module during that one import makes the ``try`` fall through; wandb
loads later, the first time a W&B run is created. Only timm's own W&B hook (``timm.utils.update_summary(...,
log_wandb=True)``, used by timm's training script, not by the zoo) loses it.
"""

from __future__ import annotations

import sys


def import_timm_without_wandb() -> None:
    if "timm" in sys.modules or "wandb" in sys.modules:
        return
    sys.modules["wandb"] = None  # `import wandb` raises ImportError while this is set
    try:
        import timm  # noqa: F401
    finally:
        if sys.modules.get("wandb", False) is None:
            del sys.modules["wandb"]


import_timm_without_wandb()
